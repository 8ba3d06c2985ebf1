"""A job request checked against its model and turned into a plan: resolved params (seed included), output,
post-processing, priority, webhook. Nothing is stored until a plan exists; every bad field is a 422 detail."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from api.errors import invalid_params
from models.netcheck import UrlRejected, check_url
from models.params import FieldError, RenderParams, resolve_output, resolve_params
from models.postprocess import PostprocessSpec, check_postprocess
from models.registry import REGISTRY, ModelSpec, get_spec
from models.requests import JobSpec
from models.tables import Image
from models.webhooks import event_filter


@dataclass(frozen=True)
class JobPlan:
    """A job request that passed every check; nothing is stored until it exists."""

    model: str
    params: dict[str, Any]
    output: dict[str, Any]
    priority: int
    postprocess: dict[str, Any] | None = None
    reuse: bool = True
    webhook_url: str | None = None
    webhook_events: list[str] | None = None  # None: the default filter (models/webhooks.py)
    preview: bool = True  # live previews while it denoises


def model_spec(name: str) -> ModelSpec:
    spec = get_spec(name)
    if spec is None:
        raise invalid_params([FieldError(field="model", message=f"unknown model {name!r}; "
                                         f"choose one of {', '.join(REGISTRY)}")])
    return spec


def webhook_errors(url: str | None, *, allow_private: bool, field: str = "webhook_url") -> list[FieldError]:
    if url is None:
        return []
    try:
        check_url(url, allow_private=allow_private)
    except UrlRejected as exc:
        return [FieldError(field=field, message=str(exc))]
    return []


def plan_postprocess(spec: PostprocessSpec | None, params: dict[str, Any], *,
                     learned: frozenset[str] | None = None) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """The job's post-processing stages, checked against its resolved render size and fps and, when given,
    the stages with learned weights configured (Settings.learned_stages: API and workers share settings)."""
    if spec is None or spec.empty:
        return None, []
    errors = check_postprocess(spec, render_fps=params["fps"], width=params["width"], height=params["height"],
                               learned=learned)
    if errors:
        return None, [FieldError(field=f, message=m) for f, m in errors]
    return spec.model_dump(exclude_none=True), []


def plan_job(spec: JobSpec, *, default_model: str, allow_private_urls: bool = False,
             learned: frozenset[str] | None = None) -> JobPlan:
    model = model_spec(spec.model or default_model)
    params, errors = resolve_params(model, spec.params)
    output, out_errors = resolve_output(spec.output)
    errors += out_errors
    post = None
    if not errors:
        post, pp_errors = plan_postprocess(spec.postprocess, params, learned=learned)
        errors += pp_errors
    errors += webhook_errors(spec.webhook_url, allow_private=allow_private_urls)
    if errors:
        raise invalid_params(errors)
    return JobPlan(model=model.name, params=params, output=output, priority=spec.priority, postprocess=post,
                   reuse=spec.reuse, webhook_url=spec.webhook_url,
                   webhook_events=event_filter(spec.webhook_events_filter), preview=spec.preview)


def cell_params(base: RenderParams, seed: int, combo: dict[str, Any]) -> dict[str, Any]:
    """A sweep cell's raw params: the sweep's base, its one seed, and the cell's swept values."""
    return {**base.model_dump(exclude_none=True), "seed": seed, **combo}


def fingerprint(image: Image, plan: JobPlan) -> str:
    """What a render's bytes depend on, less the model revision (checked against the workers at reuse)."""
    doc = {"image": image.sha256, "model": plan.model, "params": plan.params, "output": plan.output,
           "postprocess": plan.postprocess}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
