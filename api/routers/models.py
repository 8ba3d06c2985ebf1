"""/v1/models: every model svdq serves, with its defaults, limits, ranges and ready workers."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CurrentKey
from api.deps import StateDep
from api.openapi import answers
from models import schemas
from models.params import param_ranges
from models.postprocess import union_methods
from models.presence import ready_workers
from models.registry import REGISTRY

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", name="list_models", response_model=list[schemas.Model],
            responses=answers(200, list[schemas.Model], "Every model svdq serves."))
def list_models(state: StateDep, key: CurrentKey) -> list[schemas.Model]:
    out = []
    for spec in REGISTRY.values():
        try:
            workers = ready_workers(state.redis, spec.name)
        except Exception:  # noqa: BLE001 - Redis down: report what is known, /readyz says the rest
            workers = []
        out.append(schemas.Model(
            name=spec.name, description=spec.description, default=spec.name == state.settings.default_model,
            source=state.settings.model_source(spec.name) or "built-in (random weights)",
            defaults=spec.defaults, limits=spec.limits.as_dict(), ranges=param_ranges(spec),
            workers_ready=len(workers),
            # what the ready workers advertise: weight-free methods always, "learned" where one has the weights
            postprocess=union_methods(w.get("postprocess") or {} for w in workers),
            workers=[schemas.WorkerInfo(name=w.get("name"), device=w.get("device"), postprocess=w.get("postprocess"))
                     for w in workers],
        ))
    return out
