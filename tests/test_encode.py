from __future__ import annotations

import io
import zipfile

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from worker.encode import EncodeError, encode, poster


def frames(t: int = 6, h: int = 64, w: int = 128) -> np.ndarray:
    return (np.random.default_rng(1).random((t, h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize(("fmt", "ctype"), [("mp4", "video/mp4"), ("webm", "video/webm")])
def test_videos_decode_to_the_same_frames_size_and_fps(tmp_path, fmt: str, ctype: str) -> None:  # type: ignore[no-untyped-def]
    out = encode(frames(), fps=9, fmt=fmt)
    assert out.content_type == ctype
    path = tmp_path / f"v.{out.extension}"
    path.write_bytes(out.data)
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    assert sum(1 for _ in gen) == 6 and tuple(meta["size"]) == (128, 64) and meta["fps"] == 9


def test_mp4_is_h264_yuv420p(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    path = tmp_path / "v.mp4"
    path.write_bytes(encode(frames(), fps=7, fmt="mp4").data)
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    assert "h264" in info and "yuv420p" in info


def test_encoding_is_byte_for_byte_repeatable() -> None:
    f = frames()
    for fmt in ("mp4", "webm", "gif", "frames"):
        assert encode(f, fps=7, fmt=fmt).data == encode(f, fps=7, fmt=fmt).data


def test_gif_zip_and_poster() -> None:
    f = frames(t=4)
    gif = Image.open(io.BytesIO(encode(f, fps=5, fmt="gif").data))
    assert gif.n_frames == 4 and gif.info["duration"] == 200
    names = zipfile.ZipFile(io.BytesIO(encode(f, fps=5, fmt="frames").data)).namelist()
    assert names == ["frame_0000.png", "frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert Image.open(io.BytesIO(poster(f))).size == (128, 64)


def test_wrong_frames_are_refused() -> None:
    with pytest.raises(EncodeError):
        encode(np.zeros((3, 8, 8), dtype=np.uint8), fps=7, fmt="mp4")
    with pytest.raises(EncodeError):
        encode(frames(), fps=7, fmt="avi")
