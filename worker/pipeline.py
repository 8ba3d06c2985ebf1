"""The pipeline holder: loads one SVD pipeline once per worker process and renders every job warm.

States follow Cog's model runner: NEW -> LOADING -> READY, and DEFUNCT once loading failed; every
action asserts the state it needs."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from models import weights as hub_weights
from worker.device import (
    attention_processors,
    describe_device,
    is_out_of_memory,
    resolve_device,
    set_channels_last,
    set_forward_chunking,
    source_revision,
)
from worker.memory import (
    DEFAULT_BUDGET_BYTES,
    GIB,
    DeviceMemory,
    MemoryMode,
    MemoryPlan,
    WeightBytes,
    footprint_for,
    plan_memory,
)

if TYPE_CHECKING:
    from models.settings import Settings

log = logging.getLogger("svdq.worker")


class PipelineState(StrEnum):
    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    DEFUNCT = "defunct"


LatentsHook = Callable[[int, int, Any], None]


class StepHook:
    """Called after every denoising step with (step, total); raising from it stops the render. `on_latents`
    gets the step's latents too (the live preview), before the progress is reported."""

    def __init__(self, fn: Callable[[int, int], None], total: int, on_latents: LatentsHook | None = None) -> None:
        self.fn, self.total, self.on_latents = fn, total, on_latents

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.on_latents is not None and "latents" in kwargs:
            self.on_latents(i + 1, self.total, kwargs["latents"])
        self.fn(i + 1, self.total)
        return kwargs


class PipelineHolder:
    def __init__(self, *, model: str, source: str, device: str, revision_pin: str | None = None,
                 memory_mode: MemoryMode = "auto", budget_bytes: int | None = DEFAULT_BUDGET_BYTES,
                 channels_last: bool = True, compile: bool = False, compile_mode: str = "default",
                 compile_backend: str = "inductor") -> None:
        self.model, self.source = model, source
        self.revision_pin = revision_pin  # SVDQ_MODEL_<NAME>_REVISION, for a hub id
        self.path = ""  # the directory the weights load from, once located
        self.device = resolve_device(device)
        self.memory_mode, self.budget_bytes = memory_mode, budget_bytes
        self.channels_last, self.compile = channels_last, compile
        self.compile_mode, self.compile_backend = compile_mode, compile_backend
        self.state = PipelineState.NEW
        self.pipe: Any = None
        self.load_count = 0
        self.load_seconds = 0.0
        self.instance_id = ""
        self.revision = ""
        self.dtype = ""
        self.device_label = self.device
        self.attention = ""
        self.weights = WeightBytes(0, 0, 0)
        self.warmup_seconds: float | None = None  # set once the compile warm-up render ran
        self.last_memory_mode: dict[str, Any] = {}
        self.last_options: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, model: str, source: str) -> PipelineHolder:
        budget = int(settings.gpu_memory_budget_gb * GIB) if settings.gpu_memory_budget_gb > 0 else None
        return cls(model=model, source=source, device=settings.device,
                   revision_pin=settings.model_revision(model), memory_mode=settings.memory_mode,
                   budget_bytes=budget, channels_last=settings.channels_last, compile=settings.compile,
                   compile_mode=settings.compile_mode, compile_backend=settings.compile_backend)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def _expect(self, state: PipelineState) -> None:
        if self.state != state:
            raise RuntimeError(f"pipeline is {self.state}, expected {state}")

    @property
    def weights_source(self) -> hub_weights.ModelWeights:
        return hub_weights.ModelWeights(self.model, self.source, self.revision_pin)

    def locate(self) -> str:
        """The directory the weights load from: a local one as it is; a hub id's snapshot in the Hugging Face cache,
        downloaded (the allow-list only, under the cache's lock) when it is not there. Offline and not cached: a
        WeightsError whose one sentence names the pull to run. No torch here, so that fails in a second."""
        if not self.path:
            self.path = str(hub_weights.ensure(self.weights_source, on_wait=log.info))
        return self.path

    def load(self) -> None:
        self._expect(PipelineState.NEW)
        self.state = PipelineState.LOADING
        t0 = time.perf_counter()
        try:
            path = self.locate()
            hub = not self.weights_source.local
            import torch
            from diffusers import StableVideoDiffusionPipeline

            dtype = torch.float16 if self.cuda else torch.float32
            # safetensors only: never unpickle a checkpoint
            kwargs: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": True}
            pipe = None
            if hub:  # the cache holds the fp16 variant only (models/weights.py ALLOW_PATTERNS); a CPU casts it up
                pipe = StableVideoDiffusionPipeline.from_pretrained(path, variant=hub_weights.VARIANT, **kwargs)
            elif dtype == torch.float16:
                try:
                    pipe = StableVideoDiffusionPipeline.from_pretrained(path, variant=hub_weights.VARIANT, **kwargs)
                except (OSError, ValueError):
                    pipe = None  # no fp16 variant files: load the full ones and cast
            if pipe is None:
                pipe = StableVideoDiffusionPipeline.from_pretrained(path, **kwargs)
            pipe.set_progress_bar_config(disable=True)
            self.pipe = pipe.to(self.device)
            self.dtype = str(dtype).removeprefix("torch.")
            commit = hub_weights.snapshot_commit(Path(path)) if hub else None
            self.revision = commit or source_revision(path)
            self.weights = WeightBytes(*(sum(p.numel() * p.element_size() for p in getattr(pipe, n).parameters())
                                         for n in ("unet", "vae", "image_encoder")))
            # diffusers' default on torch 2 is AttnProcessor2_0 (fused SDPA); say so if something replaced it
            self.attention = attention_processors(pipe)
            if self.attention != "AttnProcessor2_0":
                log.warning("attention is %s, not fused SDPA (AttnProcessor2_0)", self.attention)
            if self.cuda:
                if self.channels_last:
                    set_channels_last(pipe.unet)
                    set_channels_last(pipe.vae)
                props = torch.cuda.get_device_properties(torch.device(self.device))
                self.device_label = describe_device(self.device, visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                    name=props.name, total_bytes=props.total_memory)
            if self.compile:
                pipe.unet = torch.compile(pipe.unet, backend=self.compile_backend,
                                          **({"mode": self.compile_mode} if self.compile_backend == "inductor" else {}))
        except BaseException:
            self.state = PipelineState.DEFUNCT
            raise
        self.load_seconds = time.perf_counter() - t0
        self.load_count += 1
        self.instance_id = uuid.uuid4().hex[:12]
        self.state = PipelineState.READY

    def warm_up(self, params: dict[str, Any]) -> float:
        """One untimed render at the model's default size (2 steps: the UNet graph is the same at every step), at
        worker start, so the compilation is paid here and jobs of that size find the UNet compiled."""
        self._expect(PipelineState.READY)
        t0 = time.perf_counter()
        image = Image.new("RGB", (int(params["width"]), int(params["height"])), (127, 127, 127))
        self.render(image, {**params, "num_inference_steps": 2, "seed": 0}, lambda step, total: None)
        self.warmup_seconds = time.perf_counter() - t0
        return self.warmup_seconds

    def device_memory(self) -> DeviceMemory | None:
        """What the pipeline may use on its GPU: free memory plus what this process's allocator already holds
        (the weights among it), or None on the CPU."""
        if not self.cuda:
            return None
        import torch

        dev = torch.device(self.device)
        free, total = torch.cuda.mem_get_info(dev)
        return DeviceMemory(free_bytes=free + torch.cuda.memory_reserved(dev), total_bytes=total)

    def plan(self, params: dict[str, Any]) -> MemoryPlan:
        return plan_memory(frames=int(params["num_frames"]), height=int(params["height"]), width=int(params["width"]),
                           dtype_bytes=2 if self.dtype == "float16" else 4, device=self.device_memory(),
                           weights=self.weights, footprint=footprint_for(self.model), mode=self.memory_mode,
                           decode_chunk_size=params.get("decode_chunk_size"), budget_bytes=self.budget_bytes)

    def render(self, image: Image.Image, params: dict[str, Any], on_step: Callable[[int, int], None],
               on_latents: LatentsHook | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 frames for the resolved params; on_step may raise to stop. The memory plan picks the
        decode chunk, forward chunking and offload; out of memory once: one more try with decode chunk 1 and
        forward chunking. `last_memory_mode` and `last_options` say what ran."""
        self._expect(PipelineState.READY)
        plan = self.plan(params)
        try:
            return self._run(image, params, on_step, plan, low_memory=False, on_latents=on_latents)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        self._free_cache()
        return self._run(image, params, on_step, plan, low_memory=True, on_latents=on_latents)

    def _run(self, image: Image.Image, params: dict[str, Any], on_step: Callable[[int, int], None],
             plan: MemoryPlan, *, low_memory: bool, on_latents: LatentsHook | None = None) -> np.ndarray:
        import torch

        chunking = low_memory or plan.forward_chunking
        chunk = 1 if low_memory else plan.decode_chunk_size
        offload = plan.offload == "model_cpu_offload"
        self.last_memory_mode = {"mode": "low_memory_retry" if low_memory else plan.mode,
                                 "decode_chunk_size": chunk, "forward_chunking": chunking}
        graphs = compiled_graphs() if self.compile else 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        try:
            if chunking:
                set_forward_chunking(self.pipe.unet, 1)
            if offload:
                self.pipe.enable_model_cpu_offload(device=self.device)
            frames = self._call(image, params, on_step, chunk, on_latents)
        finally:
            if offload:  # the next job may have room for the whole pipeline again
                self.pipe.remove_all_hooks()
                self.pipe.to(self.device)
                self._free_cache()
            if chunking:
                set_forward_chunking(self.pipe.unet, None)
        compilations = compiled_graphs() - graphs if self.compile else 0
        self.last_options = {
            "memory_plan": plan.as_record(), "model_offload": plan.offload,
            "attention": self.attention, "channels_last": self.cuda and self.channels_last,
            "compiled": self.compile, "compilations": compilations,
            "compile_warm": self.compile and self.warmup_seconds is not None and compilations == 0,
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(torch.device(self.device)) if self.cuda else None,
        }
        return frames

    def _call(self, image: Image.Image, params: dict[str, Any], on_step: Callable[[int, int], None],
              decode_chunk: int, on_latents: LatentsHook | None = None) -> np.ndarray:
        import torch

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
                callback_on_step_end=StepHook(on_step, steps, on_latents),
            )
        frames = np.asarray(out.frames[0])
        return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)

    def _free_cache(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.empty_cache()

    def presence(self) -> dict[str, Any]:
        """What the worker's heartbeat advertises (and /v1/models lists): the device with its GPU's physical index
        and name, and how the pipeline runs there."""
        return {"device": self.device_label, "dtype": self.dtype, "compiled": self.compile,
                "memory_mode": self.memory_mode}

    def record(self) -> dict[str, Any]:
        import diffusers
        import torch

        return {
            # revision: the snapshot's commit (a directory's fingerprint); revision_pin: what the settings asked for
            "model": self.model, "source": self.source, "revision": self.revision,
            "revision_pin": self.revision_pin if not self.weights_source.local else None, "dtype": self.dtype,
            "device": self.device, "device_name": self.device_label, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "pipeline_instance": self.instance_id,
            "pipeline_loads": self.load_count, "pipeline_load_seconds": round(self.load_seconds, 3),
            "compile_warmup_seconds": None if self.warmup_seconds is None else round(self.warmup_seconds, 3),
        }


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process: a job that raises it paid for a compilation."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
