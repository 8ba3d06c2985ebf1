"""Render parameters: what a request may say, and the fully resolved set a job stores."""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.registry import REGISTRY, ModelSpec

MAX_SEED = 2**63 - 1


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["mp4", "webm", "gif", "frames"] = Field(
        default="mp4", description="mp4 (H.264), webm (VP9), gif, or frames: a zip of PNGs.")


class FieldError(BaseModel):
    field: str
    message: str


def field_message(err: Any) -> str:
    """One pydantic error as the sentence our 422 details carry."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field; remove it"
    if kind == "missing":
        return "is required"
    if kind in ("literal_error", "enum"):
        return f"must be {err['ctx']['expected']}, got {err['input']!r}"
    if kind == "int_type":
        return f"must be an integer, got {err['input']!r}"
    if kind == "model_type":
        return f"must be an object, got {err['input']!r}"
    bounds = {"greater_than_equal": "at least {ge}", "less_than_equal": "at most {le}",
              "multiple_of": "a multiple of {multiple_of}", "float_type": "a number", "string_type": "a string",
              "bool_type": "true or false", "list_type": "a list", "dict_type": "an object"}
    if kind in ("string_too_long", "too_long"):  # the input itself may be huge: not quoted back
        return f"must be at most {err['ctx']['max_length']} long"
    if kind in bounds:
        return f"must be {bounds[kind].format(**err.get('ctx', {}))}, got {err['input']!r}"
    return str(err["msg"])


def pydantic_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        out.append(FieldError(field=loc, message=field_message(err)))
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


def widest_ranges() -> dict[str, dict[str, float]]:
    """Each parameter's bounds over every model: what a request may say before its model is known (the request
    schema publishes these; each model's own, narrower limits are checked in resolve_params)."""
    out: dict[str, dict[str, float]] = {}
    for spec in REGISTRY.values():
        for name, r in param_ranges(spec).items():
            w = out.setdefault(name, dict(r))
            w["min"], w["max"] = min(w["min"], r["min"]), max(w["max"], r["max"])
    return out


_WIDE = widest_ranges()


def _bounded(name: str, description: str) -> Any:
    r = _WIDE[name]
    return Field(None, ge=r["min"], le=r["max"], multiple_of=r.get("multiple_of"), description=description)


class RenderParams(BaseModel):
    """Names follow diffusers' StableVideoDiffusionPipeline.__call__; None (or left out) means the model default.
    Bounds are the widest over all models; GET /v1/models lists each model's own ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: int | None = _bounded("width", "Output width in pixels, a multiple of 64; width x height is within the "
                                          "model's pixel limit.")
    height: int | None = _bounded("height", "Output height in pixels, a multiple of 64.")
    resize: Literal["crop", "pad", "stretch"] | None = Field(
        default=None, description="How the input image is fitted to width x height (default crop).")
    num_frames: int | None = _bounded("num_frames", "Frames to render (14 for svd, 25 for svd-xt by default).")
    num_inference_steps: int | None = _bounded("num_inference_steps", "Denoising steps.")
    fps: int | None = _bounded("fps", "Conditioning fps and the output frame rate.")
    motion_bucket_id: int | None = _bounded("motion_bucket_id", "How much motion; higher moves more.")
    noise_aug_strength: float | None = _bounded("noise_aug_strength",
                                                "Noise added to the conditioning image; more frees the video "
                                                "from it.")
    min_guidance_scale: float | None = _bounded("min_guidance_scale", "Guidance at the first frame; at most "
                                                                      "max_guidance_scale.")
    max_guidance_scale: float | None = _bounded("max_guidance_scale", "Guidance at the last frame.")
    decode_chunk_size: int | None = _bounded("decode_chunk_size", "Frames the VAE decodes at once, at most "
                                                                  "num_frames; null: what fits the worker's memory.")
    seed: int | None = _bounded("seed", "null: the server picks one and records it.")


def _range(errors: list[FieldError], name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        errors.append(FieldError(field=f"params.{name}", message=f"must be between {lo} and {hi}, got {value}"))


def resolve_params(spec: ModelSpec, raw: RenderParams | dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Merge the request's params over the model defaults and check every value against the model's
    limits. Returns (resolved, errors); resolved always carries a concrete seed."""
    if isinstance(raw, RenderParams):
        given = raw
    else:
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


def resolve_output(raw: OutputSpec | dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    if isinstance(raw, OutputSpec):
        return raw.model_dump(), []
    try:
        return OutputSpec.model_validate(raw).model_dump(), []
    except ValidationError as exc:
        return {}, pydantic_errors(exc, "output")
