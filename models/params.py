"""Render parameters: what a request may say, and the fully resolved set a job stores."""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.registry import ModelSpec

MAX_SEED = 2**63 - 1


class RenderParams(BaseModel):
    """Names follow diffusers' StableVideoDiffusionPipeline.__call__; None means the model default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: int | None = None
    height: int | None = None
    resize: Literal["crop", "pad", "stretch"] | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    decode_chunk_size: int | None = None
    seed: int | None = None


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["mp4", "webm", "gif", "frames"] = "mp4"


class JobSpec(BaseModel):
    """The body of POST /v1/jobs, less the image."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = "tiny"
    params: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    postprocess: dict[str, Any] | None = None
    webhook_url: str | None = None
    priority: int = 5
    image_id: str | None = None
    image_url: str | None = None
    reuse: bool = True


class FieldError(BaseModel):
    field: str
    message: str


def pydantic_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = "unknown field; remove it" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(FieldError(field=loc, message=msg))
    return out


# ranges that hold for every model; the rest follow the model's limits (see param_ranges)
FIXED_RANGES: dict[str, tuple[float, float]] = {
    "fps": (1, 60), "motion_bucket_id": (0, 1023), "noise_aug_strength": (0.0, 1.0),
    "min_guidance_scale": (0.0, 20.0), "max_guidance_scale": (0.0, 20.0),
}


def param_ranges(spec: ModelSpec) -> dict[str, dict[str, float]]:
    """Every numeric parameter's bounds for this model, as GET /v1/models publishes them. width and height
    are multiples of 64 with width * height <= limits.max_pixels; decode_chunk_size is also at most num_frames."""
    lim = spec.limits
    return {
        "width": {"min": 64, "max": lim.max_side, "multiple_of": 64},
        "height": {"min": 64, "max": lim.max_side, "multiple_of": 64},
        "num_frames": {"min": 2, "max": lim.max_frames},
        "num_inference_steps": {"min": 1, "max": lim.max_steps},
        **{name: {"min": lo, "max": hi} for name, (lo, hi) in FIXED_RANGES.items()},
        "decode_chunk_size": {"min": 1, "max": lim.max_frames},
        "seed": {"min": 0, "max": MAX_SEED},
    }


def _range(errors: list[FieldError], name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        errors.append(FieldError(field=f"params.{name}", message=f"must be between {lo} and {hi}, got {value}"))


def resolve_params(spec: ModelSpec, raw: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Merge the request's params over the model defaults and check every value against the model's
    limits. Returns (resolved, errors); resolved always carries a concrete seed."""
    try:
        given = RenderParams.model_validate(raw)
    except ValidationError as exc:
        return {}, pydantic_errors(exc, "params")
    p = dict(spec.defaults)
    p.update(given.model_dump(exclude_none=True))
    lim = spec.limits
    errors: list[FieldError] = []
    for side in ("width", "height"):
        v = p[side]
        if v % 64 or not 64 <= v <= lim.max_side:
            errors.append(FieldError(
                field=f"params.{side}",
                message=f"must be a multiple of 64 between 64 and {lim.max_side}, got {v}",
            ))
    if not errors and p["width"] * p["height"] > lim.max_pixels:
        errors.append(FieldError(
            field="params.width",
            message=f"{p['width']}x{p['height']} is over {spec.name}'s limit of {lim.max_pixels} pixels",
        ))
    ranges = param_ranges(spec)
    for name in ("num_frames", "num_inference_steps", *FIXED_RANGES):
        _range(errors, name, p[name], ranges[name]["min"], ranges[name]["max"])
    if p["min_guidance_scale"] > p["max_guidance_scale"]:
        errors.append(FieldError(field="params.min_guidance_scale",
                                 message="must not be above max_guidance_scale"))
    if p["decode_chunk_size"] is not None:
        _range(errors, "decode_chunk_size", p["decode_chunk_size"], 1, p["num_frames"])
    if p["seed"] is None:
        p["seed"] = secrets.randbelow(2**32)
    else:
        _range(errors, "seed", p["seed"], 0, MAX_SEED)
    return p, errors


def resolve_output(raw: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    try:
        return OutputSpec.model_validate(raw).model_dump(), []
    except ValidationError as exc:
        return {}, pydantic_errors(exc, "output")
