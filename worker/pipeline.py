"""The pipeline holder: loads one SVD pipeline once per worker process and renders every job warm.

States follow Cog's model runner: NEW -> LOADING -> READY, and DEFUNCT once loading failed; every
action asserts the state it needs."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class PipelineState(StrEnum):
    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    DEFUNCT = "defunct"


class StepHook:
    """Called after every denoising step with (step, total); raising from it stops the render."""

    def __init__(self, fn: Callable[[int, int], None], total: int) -> None:
        self.fn, self.total = fn, total

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.fn(i + 1, self.total)
        return kwargs


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def source_revision(source: str) -> str:
    """A stable name for the weights: the hub snapshot's commit, or a fingerprint of a local directory."""
    path = Path(source)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode())
            size = f.stat().st_size
            # small files (configs, tiny weights) by content; multi-GB weights by name and size
            digest.update(f.read_bytes() if size <= 64 * 2**20 else str(size).encode())
        return "dir-" + digest.hexdigest()[:16]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - revision is a record, not a reason to fail
        return "unknown"


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def set_forward_chunking(unet: Any, chunk: int | None) -> None:
    """Chunk (or, with None, stop chunking) every feed-forward layer of the UNet over the sequence."""
    for module in unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(chunk_size=chunk, dim=1)


class PipelineHolder:
    def __init__(self, *, model: str, source: str, device: str) -> None:
        self.model, self.source = model, source
        self.device = resolve_device(device)
        self.state = PipelineState.NEW
        self.pipe: Any = None
        self.load_count = 0
        self.load_seconds = 0.0
        self.instance_id = ""
        self.revision = ""
        self.dtype = ""
        self.last_memory_mode: dict[str, Any] = {}

    def _expect(self, state: PipelineState) -> None:
        if self.state != state:
            raise RuntimeError(f"pipeline is {self.state}, expected {state}")

    def load(self) -> None:
        self._expect(PipelineState.NEW)
        self.state = PipelineState.LOADING
        t0 = time.perf_counter()
        try:
            import torch
            from diffusers import StableVideoDiffusionPipeline

            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
            kwargs: dict[str, Any] = {"torch_dtype": dtype}
            pipe = None
            if dtype == torch.float16:
                try:
                    pipe = StableVideoDiffusionPipeline.from_pretrained(self.source, variant="fp16", **kwargs)
                except (OSError, ValueError):
                    pipe = None  # no fp16 variant files: load the full ones and cast
            if pipe is None:
                pipe = StableVideoDiffusionPipeline.from_pretrained(self.source, **kwargs)
            pipe.set_progress_bar_config(disable=True)
            self.pipe = pipe.to(self.device)
            self.dtype = str(dtype).removeprefix("torch.")
            self.revision = source_revision(self.source)
        except BaseException:
            self.state = PipelineState.DEFUNCT
            raise
        self.load_seconds = time.perf_counter() - t0
        self.load_count += 1
        self.instance_id = uuid.uuid4().hex[:12]
        self.state = PipelineState.READY

    def render(self, image: Image.Image, params: dict[str, Any], on_step: Callable[[int, int], None]) -> np.ndarray:
        """(T, H, W, 3) uint8 frames for the resolved params; on_step may raise to stop. Out of memory once:
        one more try with VAE decode chunk 1 and UNet forward chunking; `last_memory_mode` says which ran."""
        self._expect(PipelineState.READY)
        try:
            return self._render(image, params, on_step, low_memory=False)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        self._free_cache()
        try:
            return self._render(image, params, on_step, low_memory=True)
        finally:
            set_forward_chunking(self.pipe.unet, None)
            self._free_cache()

    def _render(self, image: Image.Image, params: dict[str, Any], on_step: Callable[[int, int], None], *,
                low_memory: bool) -> np.ndarray:
        import torch

        decode_chunk = 1 if low_memory else params["decode_chunk_size"] or self.default_decode_chunk(params)
        self.last_memory_mode = {"mode": "low_memory_retry" if low_memory else "default",
                                 "decode_chunk_size": decode_chunk, "forward_chunking": low_memory}
        if low_memory:
            set_forward_chunking(self.pipe.unet, 1)
        # a CPU generator makes the same noise on every device, so a seed means the same video
        generator = torch.Generator(device="cpu").manual_seed(int(params["seed"]))
        steps = int(params["num_inference_steps"])
        with torch.inference_mode():
            out = self.pipe(
                image, height=params["height"], width=params["width"], num_frames=params["num_frames"],
                num_inference_steps=steps, fps=params["fps"], motion_bucket_id=params["motion_bucket_id"],
                noise_aug_strength=params["noise_aug_strength"],
                min_guidance_scale=params["min_guidance_scale"], max_guidance_scale=params["max_guidance_scale"],
                decode_chunk_size=decode_chunk, generator=generator, output_type="np",
                callback_on_step_end=StepHook(on_step, steps),
            )
        frames = np.asarray(out.frames[0])
        return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)

    def _free_cache(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def default_decode_chunk(self, params: dict[str, Any]) -> int:
        # the report's choice; memory-aware selection belongs to the GPU work
        return min(8, int(params["num_frames"]))

    def record(self) -> dict[str, Any]:
        import diffusers
        import torch

        return {
            "model": self.model, "source": self.source, "revision": self.revision, "dtype": self.dtype,
            "device": self.device, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "pipeline_instance": self.instance_id, "pipeline_loads": self.load_count,
            "pipeline_load_seconds": round(self.load_seconds, 3),
        }
