"""GET /v1/images/{id}/content: the stored source image, served to its owner (the sweep page shows it beside each
row) by the API itself, from local storage and from S3 alike."""

from __future__ import annotations

import io

from PIL import Image

from models.keys import new_key_string, store_key
from models.storage import image_key
from ops.harness.images import sample_png
from ops.harness.stack import Stack


def test_an_uploaded_image_is_served_back_to_its_owner_as_the_png_it_was_stored_as(stack: Stack) -> None:
    # Given an image uploaded as a PNG
    source = sample_png(color=(200, 40, 90))
    image = stack.upload(source)
    # When its owner asks for its content
    r = stack.client.get(f"/v1/images/{image['id']}/content", headers=stack.headers, follow_redirects=False)
    # Then it is the stored PNG, from the API itself even where storage is S3 (a page's fetch could not follow a
    # redirect to another origin): the size and bytes the upload answered, and the same pixels
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
    assert len(r.content) == image["bytes"]
    png = Image.open(io.BytesIO(r.content))
    assert png.format == "PNG" and png.size == (image["width"], image["height"])
    assert png.convert("RGB").tobytes() == Image.open(io.BytesIO(source)).convert("RGB").tobytes()


def test_an_image_is_not_served_without_a_key_to_another_tenant_or_when_unknown(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload(sample_png(color=(5, 120, 220)))
    with s.client.app.state.svdq.sessions() as session:  # type: ignore[attr-defined]
        other = new_key_string()
        store_key(session, other, name="tenant-c")
        session.commit()
    path = f"/v1/images/{image['id']}/content"
    assert s.client.get(path).status_code == 401
    r = s.client.get(path, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = s.client.get("/v1/images/img_000000000000000000000000/content", headers=s.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # an image whose stored file is gone answers 404 too, never a 500
    s.client.app.state.svdq.store.local_path(image_key(image["id"])).unlink()  # type: ignore[attr-defined]
    r = s.client.get(path, headers=s.headers)
    assert r.status_code == 404 and r.json()["error"]["message"] == "The stored image is missing."
