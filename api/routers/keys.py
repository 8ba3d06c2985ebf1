"""/v1/keys/self: the calling key, its webhook signing secret and the limits that apply to it."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CurrentKey
from api.deps import StateDep
from api.openapi import answers
from models import schemas
from models.keys import limits_for

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("/self", name="get_key_self", response_model=schemas.KeySelf,
            responses=answers(200, schemas.KeySelf, "The calling key."))
def key_self(key: CurrentKey, state: StateDep) -> schemas.KeySelf:
    """The calling key: its id, name and the secret that signs its webhooks."""
    return schemas.KeySelf(id=key.id, name=key.name, prefix=key.prefix, admin=key.is_admin,
                           webhook_secret=key.webhook_secret, created_at=key.created_at,
                           limits=schemas.KeyLimits(**limits_for(key, state.settings).as_dict()))
