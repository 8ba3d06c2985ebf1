"""Learned post-processing on the worker's device: RIFE frame interpolation (worker/rife.py) and Real-ESRGAN-family
upscaling loaded with spandrel, each from a local weights file named in the settings
(SVDQ_INTERPOLATE_WEIGHTS, SVDQ_UPSCALE_WEIGHTS). Both load once at worker start, like the SVD pipeline.

Frames go through the model in chunks sized from the device's free memory (as the VAE decode does), and
should_stop is checked before every chunk, so a cancel lands within one chunk. Every stage records which
weights it ran with: the file name and the first 12 hex digits of its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from worker.frames import (
    PostprocessError,
    StopCheck,
    check_fps,
    check_frames,
    check_stop,
    frame_schedule,
    interpolated_frame_count,
)
from worker.memory import frames_per_chunk
from worker.rife import PAD_MULTIPLE, ifnet_from_state_dict

HASH_CHARS = 12
# fewer frames per chunk on a CPU: batching gains little there, and a cancel waits for the chunk in flight
CHUNK_CAP = {"cpu": 4, "cuda": 16}


class LearnedError(Exception):
    """A weights file could not be loaded as the model it should hold; the message says what to fix."""


def weights_record(path: Path) -> dict[str, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "sha256": digest.hexdigest()[:HASH_CHARS]}


def free_memory_bytes(device: str) -> int:
    """Free memory where the frames will live: the GPU's free memory, or the host's available memory.
    (worker/memory.py sizes chunks from a number; it does not measure one, so this does.)"""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def chunk_size(device: str, bytes_per_frame: int) -> int:
    cap = CHUNK_CAP["cuda" if device.startswith("cuda") else "cpu"]
    free = free_memory_bytes(device)
    # a quarter stays spare for the allocator's slack and whatever else the process holds
    return frames_per_chunk(free, bytes_per_frame, free // 4, cap=cap)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _to_tensor(frames: np.ndarray, device: str, dtype: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).to(dtype) / 255.0


def _to_frames(tensor: Any) -> np.ndarray:
    out = (tensor.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.asarray(out)


@contextlib.contextmanager
def _model_errors(what: str, frames: int) -> Iterator[None]:
    """A model failing mid-stage (out of memory above all) fails the job with a sentence, not a traceback."""
    try:
        yield
    except RuntimeError as exc:
        hint = "; render fewer frames or a smaller size" if "out of memory" in str(exc).lower() else ""
        raise PostprocessError(f"{what} failed on a chunk of {frames} frames: {str(exc)[:300]}{hint}") from exc


def _check_file(path: Path, setting: str) -> None:
    if not path.is_file():
        raise LearnedError(f"{setting} points at {path}, which is not a file; give the path of a local weights "
                           "file, or unset it to offer only the weight-free methods.")


# interpolation ----------------------------------------------------------------------------------------

def _load_state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LearnedError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    return state


class Interpolator:
    """RIFE between neighbouring frames, at the same output times as the blend method."""

    architecture = "RIFE IFNet v4.6"

    def __init__(self, net: Any, device: str, weights: dict[str, str]) -> None:
        self.device, self.weights = device, weights
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self.last_chunk = 0

    @classmethod
    def load(cls, path: Path, device: str) -> Interpolator:
        _check_file(path, "SVDQ_INTERPOLATE_WEIGHTS")
        try:
            net = ifnet_from_state_dict(_load_state_dict(path))
        except (ValueError, RuntimeError, OSError) as exc:
            raise LearnedError(f"SVDQ_INTERPOLATE_WEIGHTS ({path.name}) is not a RIFE v4.6 IFNet state dict: "
                               f"{exc}") from exc
        return cls(net, device, weights_record(path))

    def bytes_per_frame(self, h: int, w: int) -> int:
        # ~48 full-size channels live at once (frames, warps, flow, mask, block inputs) plus the last block's
        # features at half size
        elem = 2 if self.dtype == torch.float16 else 4
        return elem * h * w * (48 + int(self.net.widths[-1]))

    def __call__(self, frames: np.ndarray, src_fps: int, dst_fps: int, *,
                 should_stop: StopCheck | None = None) -> np.ndarray:
        check_frames(frames)
        check_fps(src_fps, dst_fps)
        n, h, w, _ = frames.shape
        count = interpolated_frame_count(n, src_fps, dst_fps)
        out = np.empty((count, h, w, 3), dtype=np.uint8)
        todo: list[tuple[int, int, float]] = []  # (output index, left source frame, t between it and the next)
        for k, i0, t in frame_schedule(n, src_fps, dst_fps):
            if t is None:
                out[k] = frames[i0]
            else:
                todo.append((k, i0, t))
        ph, pw = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
        self.last_chunk = chunk_size(self.device, self.bytes_per_frame(h + ph, w + pw))
        for chunk in _chunks(todo, self.last_chunk):
            check_stop(should_stop)
            left = _to_tensor(frames[[i for _, i, _ in chunk]], self.device, self.dtype)
            right = _to_tensor(frames[[i + 1 for _, i, _ in chunk]], self.device, self.dtype)
            pad = (0, pw, 0, ph)
            left, right = torch.nn.functional.pad(left, pad), torch.nn.functional.pad(right, pad)
            t = torch.tensor([tt for _, _, tt in chunk], device=self.device, dtype=self.dtype)
            t = t.view(-1, 1, 1, 1).expand(-1, 1, h + ph, w + pw)
            with torch.inference_mode(), _model_errors("RIFE interpolation", len(chunk)):
                mid = self.net(left, right, t)[:, :, :h, :w]
            out[[k for k, _, _ in chunk]] = _to_frames(mid)
        return out

    def record(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "weights": self.weights, "device": self.device,
                "chunk": self.last_chunk}


# upscaling --------------------------------------------------------------------------------------------

def _torchvision_imports() -> bool:
    """Whether torchvision imports beside this torch; a failed import leaves none of it behind."""
    try:
        importlib.import_module("torchvision")  # spandrel's dependency, declared by it, not by us
        return True
    except Exception:  # noqa: BLE001 - e.g. PyPI's build beside a CPU torch: "operator torchvision::nms ..."
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            sys.modules.pop(name, None)
        return False


def import_spandrel() -> Any:
    """spandrel, with torchvision where it imports and a stand-in for its import where it cannot.

    The worker image installs torchvision built for its torch, so spandrel imports as it is. The stand-in is
    only for a machine whose torchvision is missing or cannot import (make install here: PyPI's torchvision
    does not import beside the CPU build of torch, so spandrel is installed --no-deps). spandrel's package
    import loads every architecture it knows, and two of them (LaMa, RestoreFormer) import torchvision at
    module level; the SR architectures used here never call it, so placeholder modules stand in for the
    import only and are removed right after: nothing else in the process ever sees a `torchvision`, and a
    call into one of those two architectures would raise."""
    if "spandrel" in sys.modules or _torchvision_imports():
        import spandrel

        return spandrel

    def missing(*_: object, **__: object) -> None:
        raise RuntimeError("this spandrel architecture needs torchvision, which is not installed")

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional"]
    stubs = {name: types.ModuleType(name) for name in names}
    fn = stubs["torchvision.transforms.functional"]
    fn.rotate = fn.normalize = missing  # type: ignore[attr-defined]
    fn.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")  # type: ignore[attr-defined]
    sys.modules.update(stubs)
    try:
        import spandrel
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return spandrel


class Upscaler:
    """A spandrel super-resolution model; its own scale runs, and a different requested factor is reached
    with a Lanczos resize of its output (a 4x model serves 2x jobs)."""

    def __init__(self, descriptor: Any, device: str, weights: dict[str, str]) -> None:
        self.device, self.weights = device, weights
        if device.startswith("cuda") and descriptor.supports_half:
            descriptor.half()
        self.model = descriptor.to(device).eval()
        self.dtype = descriptor.dtype
        self.scale = int(descriptor.scale)
        self.architecture = str(descriptor.architecture.name)
        self.channels = max((int(m.out_channels) for m in descriptor.model.modules()
                             if isinstance(m, torch.nn.Conv2d)), default=64)
        self.last_chunk = 0

    @classmethod
    def load(cls, path: Path, device: str) -> Upscaler:
        _check_file(path, "SVDQ_UPSCALE_WEIGHTS")
        spandrel = import_spandrel()
        try:
            descriptor = spandrel.ModelLoader(device="cpu").load_from_file(str(path))
        except Exception as exc:  # spandrel raises many kinds for files it cannot read
            raise LearnedError(f"SVDQ_UPSCALE_WEIGHTS ({path.name}) is not a model spandrel recognises: "
                               f"{exc}") from exc
        if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR" \
                or descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise LearnedError(f"SVDQ_UPSCALE_WEIGHTS ({path.name}) holds a {descriptor.architecture.name} "
                               f"{descriptor.purpose} model; give an RGB super-resolution model such as "
                               "Real-ESRGAN.")
        return cls(descriptor, device, weights_record(path))

    def bytes_per_frame(self, h: int, w: int) -> int:
        # the widest layer's features a few times over at input size and twice at output size (upsampling)
        elem = 2 if self.dtype == torch.float16 else 4
        s2 = self.scale * self.scale
        return elem * h * w * (3 + 3 * s2 + self.channels * (6 + 2 * s2))

    def __call__(self, frames: np.ndarray, factor: int, *, should_stop: StopCheck | None = None) -> np.ndarray:
        check_frames(frames)
        if factor < 1:
            raise PostprocessError(f"upscale factor must be positive, got {factor}")
        t, h, w, _ = frames.shape
        out = np.empty((t, h * factor, w * factor, 3), dtype=np.uint8)
        self.last_chunk = chunk_size(self.device, self.bytes_per_frame(h, w))
        for start in range(0, t, self.last_chunk):
            check_stop(should_stop)
            with torch.inference_mode(), _model_errors(f"{self.architecture} upscaling", self.last_chunk):
                big = _to_frames(self.model(_to_tensor(frames[start:start + self.last_chunk], self.device,
                                                       self.dtype)))
            for i, frame in enumerate(big, start):
                out[i] = frame if self.scale == factor else np.asarray(
                    Image.fromarray(frame).resize((w * factor, h * factor), Image.Resampling.LANCZOS))
        return out

    def record(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "model_scale": self.scale, "weights": self.weights,
                "device": self.device, "chunk": self.last_chunk}


# what a worker holds ----------------------------------------------------------------------------------

class LearnedModels:
    """The learned models a worker loaded at start; None where its weights are not configured."""

    def __init__(self, interpolator: Interpolator | None = None, upscaler: Upscaler | None = None) -> None:
        self.interpolator, self.upscaler = interpolator, upscaler

    @classmethod
    def load(cls, *, interpolate_weights: Path | None, upscale_weights: Path | None, device: str) -> LearnedModels:
        return cls(Interpolator.load(interpolate_weights, device) if interpolate_weights else None,
                   Upscaler.load(upscale_weights, device) if upscale_weights else None)

    def stages(self) -> frozenset[str]:
        """The stages this worker can run with method "learned"."""
        return frozenset(name for name, model in (("interpolate", self.interpolator), ("upscale", self.upscaler))
                         if model is not None)
