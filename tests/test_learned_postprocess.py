"""Learned post-processing (RIFE interpolation, Real-ESRGAN-family upscaling) with small random-weight models
built from the same architectures, saved to files and loaded through the production loaders: no download."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import worker.learned as learned_mod
from models.postprocess import PostprocessSpec, union_methods, validate_postprocess
from models.status import TERMINAL
from ops.harness import ROOT
from ops.harness.stack import Stack, build_stack
from tests.test_e2e import decode, fetch
from worker.frames import PostprocessCanceled, PostprocessUnavailable
from worker.learned import Interpolator, LearnedError, LearnedModels, Upscaler, import_spandrel
from worker.postprocess import run_postprocess
from worker.rife import IFNet

H, W = 40, 72  # not multiples of 32: the interpolator pads and crops


def rife_weights(path: Path) -> Path:
    torch.manual_seed(0)
    # saved the way Practical-RIFE publishes flownet.pkl: DataParallel's "module." prefix on every key
    torch.save({f"module.{k}": v for k, v in IFNet((16, 16, 8, 8), depth=2).state_dict().items()}, path)
    return path


def esrgan_weights(path: Path, scale: int = 4) -> Path:
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    torch.save(ESRGAN(num_filters=8, num_blocks=1, scale=scale).state_dict(), path)
    return path


def compact_weights(path: Path, scale: int = 2) -> Path:
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    # Real-ESRGAN's own checkpoints wrap the weights in {"params": ...}
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=scale).state_dict()}, path)
    return path


def clip(t: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (t, H, W, 3), dtype=np.uint8)


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import_spandrel()
    d = tmp_path_factory.mktemp("weights")
    return {"rife": rife_weights(d / "flownet.pkl"), "esrgan": esrgan_weights(d / "esrgan_x4.pth"),
            "compact": compact_weights(d / "compact_x2.pth")}


def learned_spec(**stages: Any) -> PostprocessSpec:
    return PostprocessSpec.model_validate(stages)


# interpolation ----------------------------------------------------------------------------------------

def test_rife_turns_a_6_frame_7_fps_clip_into_18_frames_at_21_fps_and_records_its_weights(
        weights: dict[str, Path]) -> None:
    # Given a random-weight RIFE loaded from its file the way a worker loads it
    models = LearnedModels.load(interpolate_weights=weights["rife"], upscale_weights=None, device="cpu")
    frames = clip()
    # When a 7 fps clip is interpolated to 21 fps with the learned method
    out, fps, records = run_postprocess(frames, 7, learned_spec(interpolate={"fps": 21, "method": "learned"}),
                                        learned=models)
    # Then the clip keeps its duration and size, source frames pass through untouched, and the record names
    # the weights file and its sha256 prefix
    assert (out.shape, fps) == ((18, H, W, 3), 21) and out.dtype == np.uint8
    assert all(np.array_equal(out[3 * i], frames[i]) for i in range(6))
    assert not np.array_equal(out[1], frames[0]) and not np.array_equal(out[1], frames[1])
    rec = records[0]
    assert (rec["method"], rec["architecture"], rec["frames"]) == ("learned", "RIFE IFNet v4.6", 18)
    assert rec["weights"] == {"file": "flownet.pkl", "sha256": sha12(weights["rife"])}


def test_a_file_that_is_not_an_ifnet_state_dict_is_refused_naming_the_setting(tmp_path: Path,
                                                                               weights: dict[str, Path]) -> None:
    with pytest.raises(LearnedError, match=r"SVDQ_INTERPOLATE_WEIGHTS.*esrgan_x4\.pth.*not a RIFE"):
        Interpolator.load(weights["esrgan"], "cpu")
    with pytest.raises(LearnedError, match=r"SVDQ_INTERPOLATE_WEIGHTS points at .*missing\.pkl, which is not a file"):
        Interpolator.load(tmp_path / "missing.pkl", "cpu")


# upscaling --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "factor", "arch", "model_scale"), [
    ("esrgan", 4, "ESRGAN", 4),
    ("esrgan", 2, "ESRGAN", 4),  # a 4x model serves a 2x job: its output is resized down
    ("compact", 2, "RealESRGAN Compact", 2),
])
def test_a_spandrel_loaded_real_esrgan_upscales_every_frame_by_the_factor(
        weights: dict[str, Path], model: str, factor: int, arch: str, model_scale: int) -> None:
    models = LearnedModels.load(interpolate_weights=None, upscale_weights=weights[model], device="cpu")
    out, fps, records = run_postprocess(clip(3), 7, learned_spec(upscale={"factor": factor, "method": "learned"}),
                                        learned=models)
    assert (out.shape, fps) == ((3, H * factor, W * factor, 3), 7) and out.dtype == np.uint8
    rec = records[0]
    assert (rec["architecture"], rec["model_scale"], rec["to_size"]) == (arch, model_scale, [W * factor, H * factor])
    assert rec["weights"] == {"file": weights[model].name, "sha256": sha12(weights[model])}


def test_a_file_spandrel_cannot_read_is_refused_naming_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pth"
    bad.write_bytes(b"not a model")
    with pytest.raises(LearnedError, match=r"SVDQ_UPSCALE_WEIGHTS \(notes\.pth\) is not a model spandrel"):
        Upscaler.load(bad, "cpu")


def test_spandrel_imports_without_torchvision_and_leaves_none_behind() -> None:
    code = ("import sys; from worker.learned import import_spandrel; s = import_spandrel(); "
            "from spandrel.architectures.ESRGAN import ESRGAN; "
            "assert 'torchvision' not in sys.modules, 'stub left behind'; print(s.__version__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("0.4")



def test_a_torchvision_that_cannot_import_gets_the_stand_in_and_a_working_one_is_used(tmp_path: Path) -> None:
    """The stand-in is for a torchvision that is missing or broken beside this torch; a torchvision that
    imports is spandrel's own (a fake one here, on PYTHONPATH, that says whether it was imported)."""
    code = ("import sys; from worker.learned import import_spandrel; s = import_spandrel(); "
            "print(getattr(sys.modules.get('torchvision'), 'REAL', 'none'))")
    broken, working = tmp_path / "broken" / "torchvision", tmp_path / "working" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    working.mkdir(parents=True)
    (working / "__init__.py").write_text("REAL = 'yes'\n")
    (working / "transforms").mkdir()
    (working / "transforms" / "__init__.py").write_text("")
    (working / "transforms" / "functional.py").write_text(
        "def rotate(*a, **k): pass\ndef normalize(*a, **k): pass\n"
        "class InterpolationMode:\n    BILINEAR = 'bilinear'\n")
    seen = {}
    for name, where in (("broken", broken.parent), ("working", working.parent)):
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": f"{where}:{ROOT}"})
        assert r.returncode == 0, r.stderr
        seen[name] = r.stdout.strip()
    assert seen == {"broken": "none", "working": "yes"}


# memory, cancel, availability -------------------------------------------------------------------------

def test_chunks_are_sized_from_free_memory(weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    up = Upscaler.load(weights["esrgan"], "cpu")
    per_frame = up.bytes_per_frame(H, W)
    # Given free memory for about two frames (after the spare quarter)
    monkeypatch.setattr(learned_mod, "free_memory_bytes", lambda device: int(per_frame * 2.7))
    out = up(clip(5), 4)
    # Then the frames go through in chunks of two, and all of them come out
    assert up.last_chunk == 2 and out.shape == (5, H * 4, W * 4, 3)
    monkeypatch.setattr(learned_mod, "free_memory_bytes", lambda device: 10 * 2**40)
    up(clip(5), 4)
    assert up.last_chunk == learned_mod.CHUNK_CAP["cpu"]


def test_a_cancel_inside_a_learned_stage_stops_it_after_the_chunk_in_flight(weights: dict[str, Path]) -> None:
    models = LearnedModels.load(interpolate_weights=weights["rife"], upscale_weights=None, device="cpu")
    assert models.interpolator is not None
    calls = {"model": 0, "stop": 0}
    forward = models.interpolator.net.forward

    def counting(*args: Any) -> Any:
        calls["model"] += 1
        return forward(*args)

    models.interpolator.net.forward = counting

    def should_stop() -> bool:  # False before the stage and before its first chunk, then a cancel arrives
        calls["stop"] += 1
        return calls["stop"] > 2

    spec = learned_spec(interpolate={"fps": 21, "method": "learned"})  # 12 new frames: 3 chunks of 4 on a CPU
    with pytest.raises(PostprocessCanceled):
        run_postprocess(clip(), 7, spec, should_stop=should_stop, learned=models)
    assert calls["model"] == 1


def test_a_learned_stage_without_a_model_fails_before_any_stage_runs() -> None:
    ran: list[str] = []
    spec = learned_spec(interpolate={"fps": 21, "method": "blend"}, upscale={"factor": 2, "method": "learned"})
    with pytest.raises(PostprocessUnavailable, match=r"SVDQ_UPSCALE_WEIGHTS.*use 'lanczos'"):
        run_postprocess(clip(), 7, spec, on_stage=lambda name, i, n: ran.append(name), learned=LearnedModels())
    assert ran == []


def test_validation_refuses_learned_for_a_stage_without_weights_and_names_the_alternatives() -> None:
    raw = {"interpolate": {"fps": 24, "method": "learned"}, "upscale": {"factor": 2, "method": "learned"}}
    spec, errors = validate_postprocess(raw, render_fps=7, width=256, height=128, learned=frozenset({"upscale"}))
    assert spec is None
    assert errors == [("postprocess.interpolate.method", "'learned' needs interpolate weights, which this service "
                       "has not configured (SVDQ_INTERPOLATE_WEIGHTS); use 'blend' or 'motion'")]
    spec, errors = validate_postprocess(raw, render_fps=7, width=256, height=128,
                                        learned=frozenset({"interpolate", "upscale"}))
    assert errors == [] and spec is not None and spec.upscale is not None and spec.upscale.method == "learned"


def test_the_models_list_is_the_union_of_what_ready_workers_advertise() -> None:
    weight_free = {"interpolate": ["blend", "motion"], "upscale": ["lanczos"]}
    assert union_methods([]) == weight_free
    assert union_methods([{}, weight_free]) == weight_free
    one_upscaler = {"interpolate": ["blend", "motion"], "upscale": ["lanczos", "learned"]}
    one_rife = {"interpolate": ["blend", "motion", "learned"], "upscale": ["lanczos"]}
    assert union_methods([weight_free, one_upscaler]) == one_upscaler
    assert union_methods([one_rife, one_upscaler]) == {"interpolate": ["blend", "motion", "learned"],
                                                       "upscale": ["lanczos", "learned"]}


# a real worker ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def learned_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_cache: Path,
                  weights: dict[str, Path]) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("learned-stack")
    stack = build_stack(tmp, database_url=f"sqlite:///{tmp}/svdq.db", storage_url=f"file://{tmp}/results",
                        redis_url=f"{redis_url}/7", tiny_cache=tiny_cache,
                        SVDQ_INTERPOLATE_WEIGHTS=str(weights["rife"]), SVDQ_UPSCALE_WEIGHTS=str(weights["esrgan"]))
    stack.start_worker()
    yield stack
    stack.stop()
    stack.client.__exit__(None, None, None)


def test_a_worker_with_weights_advertises_learned_and_runs_a_learned_job(learned_stack: Stack, tmp_path: Path,
                                                                         weights: dict[str, Path]) -> None:
    s = learned_stack
    # Given a worker started with both weights files, GET /v1/models lists "learned" for both stages
    tiny = next(m for m in s.client.get("/v1/models", headers=s.headers).json() if m["name"] == "tiny")
    assert tiny["postprocess"] == {"interpolate": ["blend", "motion", "learned"], "upscale": ["lanczos", "learned"]}
    # When a 6-frame 7 fps job asks for learned interpolation to 21 fps and a learned 2x upscale
    job = s.submit(s.upload()["id"], params={"num_frames": 6, "fps": 7, "num_inference_steps": 2},
                   postprocess={"interpolate": {"fps": 21, "method": "learned"},
                                "upscale": {"factor": 2, "method": "learned"}})
    done = s.wait(job["id"], timeout=180)
    # Then the video has 18 frames at 21 fps, twice the size, and the runtime names each stage's weights
    assert done["status"] == "succeeded", (done, s.worker_log())
    assert (done["result"]["frames"], done["result"]["fps"], done["result"]["width"]) == (18, 21, 256)
    assert decode(fetch(s, done["result"]["video_url"]).content, tmp_path) == (18, (256, 128), 21.0)
    used = {r["stage"]: r["weights"] for r in done["runtime"]["postprocess"]}
    assert used == {"interpolate": {"file": "flownet.pkl", "sha256": sha12(weights["rife"])},
                    "upscale": {"file": "esrgan_x4.pth", "sha256": sha12(weights["esrgan"])}}


@pytest.mark.parametrize(("post", "field", "alternative"), [
    ({"interpolate": {"fps": 21, "method": "learned"}}, "postprocess.interpolate.method", "'blend' or 'motion'"),
    ({"upscale": {"factor": 2, "method": "learned"}}, "postprocess.upscale.method", "'lanczos'"),
])
def test_learned_where_no_weights_are_configured_is_422_naming_the_available_methods(
        sqlite_stack: Stack, post: dict[str, Any], field: str, alternative: str) -> None:
    s = sqlite_stack
    r = s.client.post("/v1/jobs", headers=s.headers, json={"model": "tiny", "image_id": s.upload()["id"],
                                                           "params": {"num_frames": 6}, "postprocess": post})
    assert r.status_code == 422, r.text
    details = {d["field"]: d["message"] for d in r.json()["error"]["details"]}
    assert alternative in details[field] and "not configured" in details[field], details


def test_a_learned_stage_shows_in_progress_and_a_cancel_stops_it(learned_stack: Stack) -> None:
    s = learned_stack
    # Given a job whose learned interpolation makes ~100 new frames (several seconds on a CPU)
    job = s.submit(s.upload()["id"], params={"num_frames": 14, "fps": 7, "num_inference_steps": 2},
                   postprocess={"interpolate": {"fps": 60, "method": "learned"}})
    # When its progress names the interpolate stage, a cancel is requested
    deadline = time.monotonic() + 120
    view = s.client.get(f"/v1/jobs/{job['id']}", headers=s.headers).json()
    while view["progress"].get("stage") != "interpolate" and view["status"] not in TERMINAL:
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
        view = s.client.get(f"/v1/jobs/{job['id']}", headers=s.headers).json()
    assert view["progress"]["stage"] == "interpolate", view
    assert s.client.post(f"/v1/jobs/{job['id']}/cancel", headers=s.headers).status_code in (200, 202)
    # Then the job ends canceled inside post-processing, without a result
    done = s.wait(job["id"], timeout=120)
    assert done["status"] == "canceled" and done["result"] is None, done
    assert "during post-processing" in done["error"]["message"], done["error"]


def test_the_postprocess_benchmark_times_the_learned_stages_and_labels_their_model_size() -> None:
    r = subprocess.run([sys.executable, "ops/bench/postprocess.py", "--quick", "--upscale-4x"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = dict(re.findall(r"^\| (learned [^|]*?) \| [\d.]+ \| ([\dx]+) \|$", r.stdout, re.M))
    assert {name.split(" (")[0]: shape for name, shape in rows.items()} == {
        "learned interpolate RIFE v4.6 7->24 fps": "21x64x128x3",  # 6 frames 7->24 fps
        "learned upscale 2x Real-ESRGAN Compact": "6x128x256x3",
        "learned upscale 4x Real-ESRGAN x4plus": "6x256x512x3",
    }
    assert all("random weights, SMALL model, not the published size, cpu" in name for name in rows)
