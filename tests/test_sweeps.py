"""Sweeps against a real worker: the seed report's studies as one request, with labelled comparison grids."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from models.tables import Job, Sweep
from ops.harness.images import sample_png
from ops.harness.stack import Stack
from tests.test_e2e import fetch
from worker.grid import BAND, GAP, PLACEHOLDER_BG, decode_video

QUICK = {"num_inference_steps": 2, "num_frames": 4, "seed": 42}


def get(stack: Stack, sweep_id: str) -> dict[str, Any]:
    return dict(stack.client.get(f"/v1/sweeps/{sweep_id}", headers=stack.headers).json())


def wait_sweep(stack: Stack, sweep_id: str, timeout: float = 240) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Polls to the end, checking counts at every stage; returns the final view and every view seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = get(stack, sweep_id)
        seen.append(view)
        assert sum(view["counts"].values()) == view["total"]
        if view["status"] in ("succeeded", "failed", "canceled") and all(g["status"] in ("done", "failed")
                                                                         for g in view["grids"]):
            return view, seen
        time.sleep(0.2)
    raise AssertionError(f"sweep did not finish: {seen[-1]}")


def tiles_of(frame: np.ndarray, rows: int, cols: int, tw: int, th: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(label band, picture) of every tile, row-major."""
    out = []
    for r in range(rows):
        for c in range(cols):
            x, y = c * (tw + GAP), r * (th + BAND + GAP)
            out.append((frame[y:y + BAND, x:x + tw], frame[y + BAND:y + BAND + th, x:x + tw]))
    return out


def db_counts(stack: Stack) -> tuple[int, int]:
    with stack.client.app.state.svdq.sessions() as s:  # type: ignore[attr-defined]
        return (int(s.scalar(select(func.count()).select_from(Sweep)) or 0),
                int(s.scalar(select(func.count()).select_from(Job)) or 0))


def test_a_2x3x2_sweep_renders_12_cells_and_two_labelled_grids(sqlite_stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = sqlite_stack
    images = [s.upload(sample_png(color=(200, 40, 40)))["id"], s.upload(sample_png(color=(40, 200, 40)))["id"]]
    body = {"name": "exp", "model": "tiny", "images": [{"image_id": i} for i in images], "params": QUICK,
            "axes": {"motion_bucket_id": [120, 240, 360], "noise_aug_strength": [0.1, 0.4]}}
    r = s.client.post("/v1/sweeps", headers=s.headers, json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["total"] == 12 and sweep["status"] in ("queued", "running")
    assert sweep["gallery_url"] == f"/ui/sweeps/{sweep['id']}"
    final, seen = wait_sweep(s, sweep["id"])
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] == 12
    statuses = [v["status"] for v in seen]
    assert statuses == sorted(statuses, key=["queued", "running", "succeeded"].index)  # never goes backwards
    # every cell shares the base seed and differs only in the swept values
    cells = s.client.get(f"/v1/sweeps/{sweep['id']}/jobs", headers=s.headers).json()["items"]
    assert len(cells) == 12 and {c["params"]["seed"] for c in cells} == {42}
    assert {(c["params"]["motion_bucket_id"], c["params"]["noise_aug_strength"]) for c in cells} == {
        (m, n) for m in (120, 240, 360) for n in (0.1, 0.4)}
    assert {c["sweep_id"] for c in cells} == {sweep["id"]}
    # one grid per image: 3 rows (motion buckets) x 2 columns (noise), 4 frames, labels drawn
    assert [g["image_id"] for g in final["grids"]] == images
    for g in final["grids"]:
        assert g["status"] == "done"
        frames = decode_video(fetch(s, g["video_url"]).content)
        tw, th = 128, 64
        assert frames.shape == (4, 3 * (th + BAND) + 2 * GAP, 2 * tw + GAP + (2 * tw + GAP) % 2, 3)
        for band, picture in tiles_of(frames[0], 3, 2, tw, th):
            assert (band.max(axis=2) > 150).sum() > 30  # white label text on the band
            assert np.median(band) < 40  # on a black band
            assert picture.std() > 1  # a rendered cell, not a placeholder
        poster = Image.open(io.BytesIO(fetch(s, g["poster_url"]).content))
        assert poster.size == (frames.shape[2], frames.shape[1])


def test_canceling_a_running_sweep_keeps_finished_cells_and_draws_placeholders(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload(sample_png(color=(10, 10, 200)))["id"]
    body = {"model": "tiny", "images": [{"image_id": image}],
            "params": {"num_inference_steps": 25, "num_frames": 6, "seed": 1},
            "axes": {"motion_bucket_id": [10, 20, 30, 40]}}
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json=body).json()
    deadline = time.monotonic() + 120
    while True:
        view = get(s, sweep["id"])
        if view["counts"]["succeeded"] >= 1 and view["counts"]["running"] == 1:
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    r = s.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=s.headers)
    assert r.status_code == 200
    final, _ = wait_sweep(s, sweep["id"])
    assert final["status"] == "canceled"
    assert final["counts"]["succeeded"] >= 1 and final["counts"]["canceled"] >= 2
    assert final["counts"]["queued"] == final["counts"]["running"] == 0
    # the grid keeps the finished cells and shows the canceled ones as labelled placeholders
    g = final["grids"][0]
    assert g["status"] == "done"
    frames = decode_video(fetch(s, g["video_url"]).content)
    cells = s.client.get(f"/v1/sweeps/{sweep['id']}/jobs", headers=s.headers).json()["items"]
    by_bucket = {c["params"]["motion_bucket_id"]: c["status"] for c in cells}
    for (band, picture), bucket in zip(tiles_of(frames[0], 1, 4, 128, 64), [10, 20, 30, 40], strict=True):
        assert (band.max(axis=2) > 150).sum() > 30
        if by_bucket[bucket] == "canceled":
            assert abs(int(np.median(picture)) - PLACEHOLDER_BG[0]) < 12
        else:
            assert by_bucket[bucket] == "succeeded"
    r = s.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=s.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "sweep_finished")


def test_a_sweep_with_one_bad_value_or_too_many_cells_creates_nothing(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    image = s.upload()["id"]
    before = db_counts(s)
    cases = [
        ({"motion_bucket_id": [120, 5000]}, "axes.motion_bucket_id[1]"),
        ({"width": [128, 1000]}, "axes.width[1]"),
        ({"motion_bucket_id": list(range(300))}, "axes.motion_bucket_id"),
        ({"motion_bucket_id": list(range(50)), "fps": list(range(1, 12))}, "axes"),  # 550 cells > 500
        ({"guidance": [1, 2]}, "axes.guidance"),
        ({}, "axes"),
    ]
    for axes, field in cases:
        r = s.client.post("/v1/sweeps", headers=s.headers,
                          json={"model": "tiny", "images": [{"image_id": image}], "params": QUICK, "axes": axes})
        assert r.status_code == 422, (axes, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_params" and field in [d["field"] for d in err["details"]], err
    r = s.client.post("/v1/sweeps", headers=s.headers, json={"model": "tiny", "images": [{"image_id": "img_no"}],
                                                             "params": QUICK, "axes": {"fps": [6, 7]}})
    assert r.status_code == 404
    assert db_counts(s) == before


def test_a_multipart_sweep_takes_its_images_as_parts(sqlite_stack: Stack) -> None:
    import json

    s = sqlite_stack
    files = [("image", ("a.png", sample_png(color=(1, 100, 1)), "image/png")),
             ("image", ("b.png", sample_png(color=(100, 1, 1)), "image/png"))]
    spec = {"model": "tiny", "params": QUICK, "axes": {"noise_aug_strength": [0.1, 0.2]}}
    r = s.client.post("/v1/sweeps", headers=s.headers, files=files, data={"spec": json.dumps(spec)})
    assert r.status_code == 202, r.text
    assert r.json()["total"] == 4 and len(r.json()["images"]) == 2
    final, _ = wait_sweep(s, r.json()["id"])
    assert final["status"] == "succeeded"
