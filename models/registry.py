"""The model variants svdq serves, with their defaults and limits. Pure data: no torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class ModelLimits:
    max_side: int = 2048
    max_pixels: int = 1024 * 1024
    max_frames: int = 32
    max_steps: int = 100

    def as_dict(self) -> dict[str, int]:
        return {"max_side": self.max_side, "max_pixels": self.max_pixels,
                "max_frames": self.max_frames, "max_steps": self.max_steps}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    default_source: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: ModelLimits = ModelLimits()
    # a render on a CPU may take this long before it is stopped (issue: time limits)
    time_limit_s: float = 1800.0


def _defaults(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "width": 1024, "height": 576, "resize": "crop", "num_frames": 14, "num_inference_steps": 25,
        "fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02,
        "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, "decode_chunk_size": None, "seed": None,
    }
    base.update(over)
    return base


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("svd", "SVD img2vid, 14 frames at 1024x576",
                  "stabilityai/stable-video-diffusion-img2vid", _defaults(num_frames=14)),
        ModelSpec("svd-xt", "SVD-XT img2vid, 25 frames at 1024x576",
                  "stabilityai/stable-video-diffusion-img2vid-xt", _defaults(num_frames=25)),
        ModelSpec("svd-xt-1-1", "SVD-XT 1.1 img2vid, 25 frames at 1024x576",
                  "stabilityai/stable-video-diffusion-img2vid-xt-1-1", _defaults(num_frames=25)),
        ModelSpec("tiny", "random-weight SVD of the same diffusers classes, for tests and demos on a CPU",
                  None, _defaults(width=128, height=64, num_frames=14, num_inference_steps=25),
                  ModelLimits(max_side=512, max_pixels=512 * 256, max_frames=32, max_steps=50),
                  time_limit_s=600.0),
    )
}


def get_spec(name: str) -> ModelSpec | None:
    return REGISTRY.get(name)


class ModelName(StrEnum):
    """The registry's names, as requests give them (and generated clients offer them)."""

    SVD = "svd"
    SVD_XT = "svd-xt"
    SVD_XT_1_1 = "svd-xt-1-1"
    TINY = "tiny"


if set(ModelName) != set(REGISTRY):
    raise RuntimeError("models.registry.ModelName must list exactly the REGISTRY's models")
