"""The job's `postprocess` field: its schema, its check at submit time, and which methods exist.

``{"interpolate": {"fps": 24, "method": "blend" | "motion" | "learned"},
"upscale": {"factor": 2 | 4, "method": "lanczos" | "learned"}}``. The weight-free methods run on every
worker; "learned" needs weights (SVDQ_INTERPOLATE_WEIGHTS / SVDQ_UPSCALE_WEIGHTS), so it is refused at submit
where the settings name none, and a worker lists it in its heartbeat only when its model loaded. Pure data: the
API checks jobs with it, the worker reads its spec and advertises its methods.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.params import pydantic_errors

DEFAULT_MAX_FPS = 60
DEFAULT_MAX_PIXELS = 4096 * 2304

# the methods every worker runs; "learned" joins a stage's list only where its weights are configured
WEIGHT_FREE_METHODS: dict[str, tuple[str, ...]] = {"interpolate": ("blend", "motion"), "upscale": ("lanczos",)}
WEIGHTS_SETTING = {"interpolate": "SVDQ_INTERPOLATE_WEIGHTS", "upscale": "SVDQ_UPSCALE_WEIGHTS"}


def postprocess_methods(learned: Iterable[str] = ()) -> dict[str, list[str]]:
    """Each stage's methods, given the stages that have learned weights (what a worker advertises)."""
    have = set(learned)
    return {stage: [*methods, *(["learned"] if stage in have else [])]
            for stage, methods in WEIGHT_FREE_METHODS.items()}


def union_methods(advertised: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The methods any of the workers can run, from their advertised `postprocess` lists; weight-free always."""
    learned = {stage for methods in advertised for stage, names in (methods or {}).items()
               if stage in WEIGHT_FREE_METHODS and "learned" in (names or [])}
    return postprocess_methods(learned)


# job field --------------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InterpolateSpec(_Strict):
    # bounds checked in check_postprocess (with the render's own fps), published here for the request schema
    fps: int = Field(json_schema_extra={"minimum": 2, "maximum": DEFAULT_MAX_FPS},
                     description="The output frame rate, above the render's fps.")
    method: Literal["blend", "motion", "learned"] = Field(
        description="blend: cross-fade; motion: ffmpeg's motion-compensated interpolation; learned: RIFE (where "
                    "GET /v1/models lists it).")


class UpscaleSpec(_Strict):
    factor: Literal[2, 4]
    method: Literal["lanczos", "learned"] = Field(
        description="lanczos, or learned: a Real-ESRGAN-family model (where GET /v1/models lists it).")


class PostprocessSpec(_Strict):
    """Stages after denoising, before encoding: interpolation, then upscaling."""

    interpolate: InterpolateSpec | None = None
    upscale: UpscaleSpec | None = None

    @property
    def empty(self) -> bool:
        return self.interpolate is None and self.upscale is None


def validate_postprocess(raw: dict[str, Any], *, render_fps: int, width: int, height: int,
                         max_fps: int = DEFAULT_MAX_FPS,
                         max_pixels: int = DEFAULT_MAX_PIXELS,
                         learned: Collection[str] | None = None,
                         ) -> tuple[PostprocessSpec | None, list[tuple[str, str]]]:
    """Check a job's `postprocess` field against the render it follows and, when `learned` is given, against
    the stages that have learned weights configured (the API passes them from its settings, shared with the
    workers; None skips that check).

    Returns (spec, errors); errors are (field path, message) pairs such as
    ("postprocess.interpolate.fps", "must be above the render fps (7), got 7"). spec is None when there are
    errors or when the field asks for nothing (``{}`` or all stages null)."""
    if not isinstance(raw, dict):
        return None, [("postprocess", f"must be an object with 'interpolate' and/or 'upscale', got {raw!r}")]
    try:
        spec = PostprocessSpec.model_validate(raw)
    except ValidationError as exc:
        return None, [(e.field, e.message) for e in pydantic_errors(exc, "postprocess")]
    errors = check_postprocess(spec, render_fps=render_fps, width=width, height=height, max_fps=max_fps,
                               max_pixels=max_pixels, learned=learned)
    if errors:
        return None, errors
    return (None if spec.empty else spec), []


def check_postprocess(spec: PostprocessSpec, *, render_fps: int, width: int, height: int,
                      max_fps: int = DEFAULT_MAX_FPS, max_pixels: int = DEFAULT_MAX_PIXELS,
                      learned: Collection[str] | None = None) -> list[tuple[str, str]]:
    """What a well-formed `postprocess` asks that this render cannot give: (field path, message) pairs."""
    errors: list[tuple[str, str]] = []
    for stage, part in (("interpolate", spec.interpolate), ("upscale", spec.upscale)):
        if learned is not None and part is not None and part.method == "learned" and stage not in learned:
            errors.append((f"postprocess.{stage}.method", unavailable_message(stage)))
    if spec.interpolate is not None:
        fps = spec.interpolate.fps
        if fps <= render_fps:
            errors.append(("postprocess.interpolate.fps",
                           f"must be above the render fps ({render_fps}) to interpolate, got {fps}"))
        elif fps > max_fps:
            errors.append(("postprocess.interpolate.fps", f"must be at most {max_fps}, got {fps}"))
    if spec.upscale is not None:
        f = spec.upscale.factor
        w, h = width * f, height * f
        if w * h > max_pixels:
            errors.append(("postprocess.upscale.factor",
                           f"{f}x of {width}x{height} gives {w}x{h} = {w * h} pixels, over the limit of "
                           f"{max_pixels}; use a smaller factor or a smaller render size"))
    return errors


def unavailable_message(stage: str) -> str:
    choices = " or ".join(repr(m) for m in WEIGHT_FREE_METHODS[stage])
    return (f"'learned' needs {stage} weights, which this service has not configured "
            f"({WEIGHTS_SETTING[stage]}); use {choices}")
