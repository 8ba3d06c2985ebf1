"""The render arguments `svdq submit` and `svdq run` share, and their help: each parameter's meaning, and
with `--help`, each model's default and range as the API's GET /v1/models gives them (fetched only then)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from client._errors import SvdqError

PARAM_DOC = {
    "width": "output width in pixels",
    "height": "output height in pixels",
    "num_frames": "frames to render",
    "num_inference_steps": "denoising steps (more: slower and finer)",
    "fps": "frames per second of the video, also a conditioning input of the model",
    "motion_bucket_id": "how much motion (higher: more)",
    "noise_aug_strength": "noise added to the input image (higher: less like it, more motion)",
    "min_guidance_scale": "classifier-free guidance at the first frame",
    "max_guidance_scale": "classifier-free guidance at the last frame",
    "decode_chunk_size": "frames the VAE decodes at once (fewer: less GPU memory)",
    "seed": "random seed (the same seed and inputs give the same video)",
}
PARAMS = list(PARAM_DOC)
FLOATS = {"noise_aug_strength", "min_guidance_scale", "max_guidance_scale"}
EVENTS = ("started", "completed")


def _range(r: dict[str, float]) -> str:
    text = f"{r['min']:g}..{r['max']:g}" if "min" in r and "max" in r else ""
    return text + (f", multiple of {r['multiple_of']:g}" if "multiple_of" in r else "")


def model_help(models: list[Any]) -> dict[str, str]:
    """Each parameter's help line with every model's default and range, from /v1/models' answer."""
    out = {}
    for name, doc in PARAM_DOC.items():
        per = []
        for m in models:
            default = m.defaults.get(name)
            bounds = _range(m.ranges.get(name, {}))
            if default is not None or bounds:
                shown = "random" if default is None and name == "seed" else default
                per.append(f"{m.name}: {shown if shown is not None else '-'}"
                           + (f" ({bounds})" if bounds else ""))
        out[name] = f"{doc}; default (range): " + "; ".join(per) if per else doc
    return out


class HelpWithModels(argparse.Action):
    """-h/--help that first asks the API for its models, so each parameter shows their defaults and ranges;
    when the API cannot be reached within 2 s, the help says where they are instead."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show this help, with each model's defaults and ranges from the API, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from client.sdk import Client

        try:
            with Client(timeout=2.0, retries=0) as c:
                models = c.models()
            default = next((m.name for m in models if getattr(m, "default", False)), None)
        except Exception as exc:  # noqa: BLE001 - the help is printed whatever went wrong
            parser.epilog = (f"(defaults and ranges per model: GET /v1/models or `svdq models`; the API was not "
                             f"reachable: {type(exc).__name__})")
        else:
            helps = model_help(models)
            for action in parser._actions:
                if action.dest in helps:
                    action.help = helps[action.dest]
                if action.dest == "model":
                    action.help = f"one of {', '.join(m.name for m in models)} (default: the server's" + (
                        f", {default})" if default else ")")
        parser.print_help()
        parser.exit()


def add_render_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("-h", "--help", action=HelpWithModels)
    s.add_argument("image", nargs="?", help="a PNG, JPEG or WebP file, or an http(s) URL that the server fetches")
    s.add_argument("--image-url", metavar="URL", help="an http(s) URL of a public image, fetched by the server")
    s.add_argument("--model", default=None, help="the model (default: the server's; see svdq models)")
    for name in PARAMS:
        s.add_argument("--" + name.replace("_", "-"), dest=name, type=float if name in FLOATS else int,
                       metavar="X" if name in FLOATS else "N", help=PARAM_DOC[name])
    s.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any render parameter by its API name, e.g. -p motion_bucket_id=180 (repeatable; the value "
                        "is read as JSON, else as text)")
    s.add_argument("--format", default="mp4", choices=["mp4", "webm", "gif", "frames"], help="default mp4")
    s.add_argument("--postprocess", metavar="JSON|@FILE",
                   help='post-processing, e.g. \'{"interpolate": {"fps": 24, "method": "motion"}}\'')
    s.add_argument("--webhook-url", metavar="URL", help="gets a signed POST (Standard Webhooks) when the job ends")
    s.add_argument("--webhook-events", metavar="EVENTS", help="comma-separated: started,completed (default completed)")
    s.add_argument("--priority", type=int, metavar="0-9", help="0-9, higher runs first (default 5)")
    s.add_argument("--no-reuse", action="store_true", help="render again even when an identical job succeeded")
    s.add_argument("--no-preview", action="store_true", help="no live previews while it denoises")


def _json_arg(text: str, flag: str) -> Any:
    try:
        return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise SvdqError(0, "bad_argument", f"{flag} takes JSON or @FILE of JSON: {exc}") from exc


def render_request(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(the image argument, the keyword arguments of Client.submit) from the command line."""
    if args.image and args.image_url:
        raise SvdqError(0, "bad_argument", "Give the image as a file or URL argument or as --image-url, not both.")
    image = args.image_url or args.image
    if image is None:
        raise SvdqError(0, "no_image", "Give an image: a file, an http(s) URL, or --image-url URL.")
    params = {p: getattr(args, p) for p in PARAMS if getattr(args, p) is not None}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SvdqError(0, "bad_argument", f"-p takes NAME=VALUE, e.g. -p motion_bucket_id=180; got {item!r}.")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    kwargs: dict[str, Any] = {"model": args.model, "output": {"format": args.format}, "priority": args.priority,
                              "reuse": not args.no_reuse, "webhook_url": args.webhook_url,
                              "preview": False if args.no_preview else None, **params}
    if args.postprocess:
        kwargs["postprocess"] = _json_arg(args.postprocess, "--postprocess")
    if args.webhook_events:
        kwargs["webhook_events_filter"] = [e.strip() for e in args.webhook_events.split(",") if e.strip()]
    return image, kwargs
