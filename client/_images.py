"""What the SDK accepts as an image, as replicate's and fal's clients do: a path, an http(s) URL (sent as
`image_url`, fetched by the server), bytes, a binary file object, or a PIL image (sent as PNG). PIL is never
imported here: an image is recognised by its `save` and `mode`, so the core install needs no Pillow."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

from client._errors import SvdqError

# Any: a PIL.Image.Image is welcome too, and naming it would make Pillow a dependency of the SDK
ImageArg = str | Path | bytes | IO[bytes] | Any


def is_url(image: object) -> bool:
    return isinstance(image, str) and image.lower().startswith(("http://", "https://"))


def image_file(image: ImageArg) -> tuple[str, bytes]:
    """(a file name, the bytes) of an image that is uploaded; a URL is not one (see `is_url`)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return "image", bytes(image)
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return "image.png", buf.getvalue()
    if hasattr(image, "read"):  # an open binary file, a BytesIO, an HTTP response body
        data = image.read()
        if isinstance(data, str):
            raise SvdqError(0, "image_unreadable", "The image file object is open in text mode; open it with 'rb'.")
        return Path(str(getattr(image, "name", "image"))).name or "image", bytes(data)
    if isinstance(image, str | Path):
        try:
            return Path(image).name, Path(image).read_bytes()
        except OSError as exc:  # one line for the CLI, not a traceback
            raise SvdqError(0, "image_unreadable", f"Cannot read the image {str(image)!r}: {exc.strerror or exc}; "
                            "give the path of a PNG, JPEG or WebP file, or an http(s) URL.") from exc
    raise SvdqError(0, "no_image", f"An image is a path, an http(s) URL, bytes, a binary file object or a PIL "
                    f"image, not {type(image).__name__}.")
