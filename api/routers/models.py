from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentKey, StateDep
from api.docs import answers
from models import schemas
from models.keys import limits_for
from models.params import param_ranges
from models.postprocess import union_methods
from models.presence import ready_workers
from models.registry import REGISTRY

router = APIRouter(prefix="/v1/models", tags=["models"])
keys_router = APIRouter(prefix="/v1/keys", tags=["keys"])


@keys_router.get("/self")
def key_self(key: CurrentKey, state: StateDep) -> dict[str, Any]:
    """The calling key: its id, name and the secret that signs its webhooks."""
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "admin": key.is_admin,
            "webhook_secret": key.webhook_secret, "created_at": key.created_at.isoformat(),
            "limits": limits_for(key, state.settings).as_dict()}


@router.get("", response_model=None, responses=answers(200, list[schemas.Model], "Every model svdq serves."))
def list_models(state: StateDep, key: CurrentKey) -> list[dict[str, Any]]:
    out = []
    for spec in REGISTRY.values():
        try:
            workers = ready_workers(state.redis, spec.name)
        except Exception:  # noqa: BLE001 - Redis down: report what is known, /readyz says the rest
            workers = []
        out.append({
            "name": spec.name, "description": spec.description,
            "source": state.settings.model_source(spec.name) or "built-in (random weights)",
            "defaults": spec.defaults, "limits": spec.limits.as_dict(), "ranges": param_ranges(spec),
            "workers_ready": len(workers),
            # what the ready workers advertise: weight-free methods always, "learned" where one has the weights
            "postprocess": union_methods(w.get("postprocess") or {} for w in workers),
            "workers": [{"name": w.get("name"), "device": w.get("device"), "postprocess": w.get("postprocess")}
                        for w in workers],
        })
    return out
