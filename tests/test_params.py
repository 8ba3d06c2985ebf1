from __future__ import annotations

import pytest

from models.params import resolve_output, resolve_params
from models.registry import REGISTRY, get_spec


def fields(errors) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.field for e in errors]


def test_left_out_params_take_the_models_defaults_and_a_seed_is_always_chosen() -> None:
    for name in ("svd", "svd-xt", "svd-xt-1-1"):
        p, errors = resolve_params(REGISTRY[name], {})
        assert not errors
        assert (p["width"], p["height"], p["num_inference_steps"], p["fps"]) == (1024, 576, 25, 7)
        assert isinstance(p["seed"], int)
    assert resolve_params(REGISTRY["svd"], {})[0]["num_frames"] == 14
    assert resolve_params(REGISTRY["svd-xt"], {})[0]["num_frames"] == 25


def test_the_seed_reports_settings_pass_as_given() -> None:
    # the seed report: 1024x576, seed 42, decode chunk 8, fps 7, bucket 120..360, noise 0.1..0.4
    for bucket, noise in [(120, 0.1), (360, 0.1), (120, 0.4)]:
        p, errors = resolve_params(REGISTRY["svd"], {"seed": 42, "decode_chunk_size": 8, "fps": 7,
                                                     "motion_bucket_id": bucket, "noise_aug_strength": noise})
        assert not errors and p["seed"] == 42 and p["motion_bucket_id"] == bucket


@pytest.mark.parametrize(("raw", "field"), [
    ({"width": 1000}, "params.width"),
    ({"height": 0}, "params.height"),
    ({"width": 2048, "height": 2048}, "params.width"),  # over svd's pixel limit
    ({"num_frames": 0}, "params.num_frames"),
    ({"num_frames": 500}, "params.num_frames"),
    ({"num_inference_steps": 0}, "params.num_inference_steps"),
    ({"fps": 0}, "params.fps"),
    ({"motion_bucket_id": -1}, "params.motion_bucket_id"),
    ({"noise_aug_strength": 1.5}, "params.noise_aug_strength"),
    ({"min_guidance_scale": 4.0, "max_guidance_scale": 2.0}, "params.min_guidance_scale"),
    ({"decode_chunk_size": 0}, "params.decode_chunk_size"),
    ({"seed": -5}, "params.seed"),
    ({"resize": "squash"}, "params.resize"),
    ({"width": "1024"}, "params.width"),
    ({"width": 1024.0}, "params.width"),
    ({"guidance": 3}, "params.guidance"),
])
def test_out_of_range_or_unknown_values_name_their_field(raw, field) -> None:  # type: ignore[no-untyped-def]
    _, errors = resolve_params(REGISTRY["svd"], raw)
    assert field in fields(errors)


def test_every_bad_field_is_reported_at_once() -> None:
    _, errors = resolve_params(REGISTRY["svd"], {"width": 1000, "num_frames": 0, "fps": 0})
    assert {"params.width", "params.num_frames", "params.fps"} <= set(fields(errors))


def test_the_tiny_model_has_its_own_smaller_limits() -> None:
    tiny = get_spec("tiny")
    assert tiny is not None
    assert resolve_params(tiny, {})[0]["width"] == 128
    assert "params.width" in fields(resolve_params(tiny, {"width": 1024})[1])


def test_output_formats() -> None:
    assert resolve_output({}) == ({"format": "mp4"}, [])
    assert resolve_output({"format": "gif"})[0] == {"format": "gif"}
    assert fields(resolve_output({"format": "avi"})[1]) == ["output.format"]


@pytest.mark.parametrize("model", sorted(REGISTRY))
def test_the_published_ranges_are_exactly_what_validation_accepts(model: str) -> None:
    from models.params import param_ranges

    spec = REGISTRY[model]
    ranges = param_ranges(spec)
    base = {"width": 128, "height": 64, "num_frames": spec.limits.max_frames, "max_guidance_scale": 20.0}
    for name, r in ranges.items():
        if name in ("width", "height"):
            continue  # multiples of 64 under a pixel budget: checked in their own tests
        step = 1 if isinstance(r["min"], int) and isinstance(r["max"], int) else 0.01
        for value, ok in ((r["min"], True), (r["max"], True), (r["min"] - step, False), (r["max"] + step, False)):
            if isinstance(step, int):
                value = int(value)
            _, errors = resolve_params(spec, {**base, name: value})
            assert (f"params.{name}" not in fields(errors)) is ok, (name, value, errors)
