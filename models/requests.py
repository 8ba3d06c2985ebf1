"""Typed shapes of the v1 API's create requests (API.md): the job spec, the sweep spec and their parts. The API
parses request bodies with them (every wrong or unknown field becomes a 422 detail naming it) and publishes them
in its OpenAPI document, so generated clients are typed both ways. Model-specific limits (each model's sizes,
the pixel budget, guidance order, post-processing against the render) are checked after parsing, when the model
is known (models/params.py, models/postprocess.py); the bounds here are the widest over all models."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.params import FieldError, OutputSpec, RenderParams, pydantic_errors
from models.postprocess import PostprocessSpec
from models.registry import ModelName
from models.webhooks import DEFAULT_EVENTS, WebhookEvent

MAX_VALUES_PER_AXIS = 50
URL_FORMAT: dict[str, Any] = {"format": "uri"}
MAX_URL = 2048
RequestT = TypeVar("RequestT", bound=BaseModel)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JobSpec(_Request):
    """A render job less its image: the multipart `spec` part beside the `image` file (and, with image_id or
    image_url, the JSON body: JobCreate)."""

    # not strict: a JSON string names the enum member
    model: ModelName | None = Field(
        default=None, strict=False,
        description="The model variant; GET /v1/models lists them with their defaults and limits. Omitted: the "
                    "server's default model (SVDQ_DEFAULT_MODEL), which GET /v1/models marks `default`.")
    params: RenderParams = Field(default_factory=lambda: RenderParams())
    output: OutputSpec = Field(default_factory=lambda: OutputSpec())
    postprocess: PostprocessSpec | None = None
    webhook_url: str | None = Field(None, max_length=MAX_URL, json_schema_extra=URL_FORMAT,
                                    description="Gets a signed POST with the job when it ends (a public address).")
    webhook_events_filter: list[WebhookEvent] = Field(
        list(DEFAULT_EVENTS), min_length=1,
        description="Which events webhook_url gets: 'started' (the render began on a worker; job.started) and "
                    "'completed' (it ended: job.succeeded, job.failed or job.canceled).")
    priority: int = Field(5, ge=0, le=9, description="0-9, higher runs first.")
    reuse: bool = Field(True, description="false: render again even when an identical job already succeeded.")
    preview: bool = Field(True, description="Live previews while it denoises (GET /v1/jobs/{id}/preview, and "
                          "`preview` events on /events?preview=true); false: none.")


class JobCreate(JobSpec):
    """The JSON body of POST /v1/jobs: a job spec and exactly one of image_id or image_url."""

    image_id: str | None = Field(None, max_length=64, description="An image from POST /v1/images.")
    image_url: str | None = Field(None, max_length=MAX_URL, json_schema_extra=URL_FORMAT,
                                  description="An http(s) URL of a public image, fetched by the server.")


def _axes_schema(schema: dict[str, Any]) -> None:
    """Each render parameter may be swept: a list of 1 to MAX_VALUES_PER_AXIS distinct values of its own type."""
    params = RenderParams.model_json_schema()["properties"]
    axes = {}
    for name, prop in params.items():
        item: dict[str, Any] = next((s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"), {})
        axes[name] = {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_VALUES_PER_AXIS,
                      "uniqueItems": True}
    schema.update({"type": "object", "properties": axes, "additionalProperties": False, "minProperties": 1})


class SweepImage(_Request):
    """One image of a sweep: exactly one of image_id or image_url."""

    image_id: str | None = Field(None, max_length=64)
    image_url: str | None = Field(None, max_length=MAX_URL, json_schema_extra=URL_FORMAT)


class SweepSpec(_Request):
    """POST /v1/sweeps: every image x the product of the axes, each cell an ordinary job sharing the base seed.
    The JSON body, or the multipart `spec` part beside `image` files (which join `images`)."""

    name: str = Field("sweep", max_length=200)
    model: ModelName | None = Field(default=None, strict=False,
                                    description="The model variant; omitted: the server's default model.")
    images: list[SweepImage] = Field(default_factory=list, max_length=64)
    params: RenderParams = Field(default_factory=lambda: RenderParams())
    # key order is axis order (the grid's tiling), so this stays a mapping; its schema lists every parameter
    axes: dict[str, list[Any]] = Field(default_factory=dict, json_schema_extra=_axes_schema,
                                       description="Render parameter -> the values to sweep, in grid order.")
    output: OutputSpec = Field(default_factory=lambda: OutputSpec())
    postprocess: PostprocessSpec | None = None
    webhook_url: str | None = Field(None, max_length=MAX_URL, json_schema_extra=URL_FORMAT,
                                    description="Gets a signed POST with the sweep when it ends.")
    webhook_events_filter: list[WebhookEvent] = Field(
        list(DEFAULT_EVENTS), min_length=1,
        description="Which events webhook_url gets: 'started' (its first cell began rendering; sweep.started) and "
                    "'completed' (every cell ended: sweep.succeeded, sweep.failed or sweep.canceled).")
    priority: int = Field(5, ge=0, le=9)
    reuse: bool = True


def parse_request(model: type[RequestT], raw: Any) -> tuple[RequestT | None, list[FieldError]]:
    """A decoded body into its request model; every wrong or unknown field becomes a FieldError naming it."""
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        return None, pydantic_errors(exc, "")
