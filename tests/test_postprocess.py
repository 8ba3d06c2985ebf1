from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest

from models.postprocess import InterpolateSpec, PostprocessSpec, UpscaleSpec, validate_postprocess
from worker.frames import PostprocessCanceled, PostprocessError, interpolated_frame_count
from worker.postprocess import interpolate_blend, interpolate_motion, run_postprocess, upscale_lanczos

H, W = 32, 64


def moving_square(t: int = 6) -> np.ndarray:
    """A grey 16x16 square sliding right 8 px per frame on black, over a faint gradient so frames differ."""
    frames = np.zeros((t, H, W, 3), dtype=np.uint8)
    frames[..., 2] = np.linspace(0, 60, W, dtype=np.uint8)[None, None, :]
    for i in range(t):
        frames[i, 8:24, 4 + 8 * i:20 + 8 * i] = 200
    return frames


def same(a: np.ndarray, b: np.ndarray, *, tolerance: int) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= tolerance


def errors_for(raw: dict[str, Any], **kw: int) -> list[tuple[str, str]]:
    args: dict[str, Any] = {"render_fps": 7, "width": 1024, "height": 576, **kw}
    spec, errors = validate_postprocess(raw, **args)
    assert spec is None
    return errors


# frame counts and interpolation -----------------------------------------------------------------------

def test_frame_count_keeps_the_clip_duration() -> None:
    # Given clips described by (frames, source fps, target fps)
    # When the interpolated frame count is computed
    # Then frames / fps stays the same, rounded to whole frames
    assert interpolated_frame_count(6, 7, 21) == 18
    assert interpolated_frame_count(14, 7, 24) == 48
    assert interpolated_frame_count(25, 6, 25) == 104  # 104.17
    assert interpolated_frame_count(1, 7, 8) == 1
    assert interpolated_frame_count(0, 7, 21) == 0


@pytest.mark.parametrize("method", ["blend", "motion"])
def test_a_6_frame_7fps_clip_interpolated_to_21fps_has_18_frames_of_the_same_shape(method: str) -> None:
    # Given a 6-frame 64x32 clip at 7 fps
    clip = moving_square()
    fn = interpolate_motion if method == "motion" else interpolate_blend
    # When it is interpolated to 21 fps
    out = fn(clip, 7, 21)
    # Then there are 18 frames of (H, W, 3) uint8, and every third one is the source frame
    # (motion goes through yuv444p in ffmpeg, so it may differ by a rounding level or two)
    assert out.shape == (18, H, W, 3) and out.dtype == np.uint8
    assert same(out[::3], clip, tolerance=0 if method == "blend" else 3)


def test_motion_interpolation_gives_the_exact_count_for_uneven_ratios() -> None:
    # Given a clip whose fps ratio is not a whole number
    clip = moving_square(5)
    # When it is motion-interpolated from 7 to 24 fps
    out = interpolate_motion(clip, 7, 24)
    # Then the count matches the blend method's, and the first frame is the first source frame
    assert len(out) == interpolated_frame_count(5, 7, 24) == len(interpolate_blend(clip, 7, 24)) == 17
    assert same(out[0], clip[0], tolerance=3)


def test_blend_of_a_black_and_a_white_frame_at_the_midpoint_is_mid_grey() -> None:
    # Given a black frame then a white frame at 1 fps
    clip = np.stack([np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 255, np.uint8)])
    # When blended to 2 fps
    out = interpolate_blend(clip, 1, 2)
    # Then frame 1 sits halfway and is mid-grey (127.5 rounded half up), and the end holds the white frame
    assert len(out) == 4
    assert (out[0] == 0).all() and (out[1] == 128).all() and (out[2] == 255).all() and (out[3] == 255).all()


def test_a_single_frame_interpolates_to_copies_of_itself() -> None:
    # Given one frame at 7 fps
    clip = moving_square(1)
    # When it is interpolated to 21 fps with either method
    # Then both give 3 copies of it
    for fn, tolerance in ((interpolate_blend, 0), (interpolate_motion, 3)):
        out = fn(clip, 7, 21)
        assert out.shape == (3, H, W, 3) and all(same(f, clip[0], tolerance=tolerance) for f in out)


def test_motion_interpolation_that_ffmpeg_refuses_raises_a_postprocess_error_with_its_stderr() -> None:
    # Given frames smaller than minterpolate's 32 px minimum side
    clip = np.zeros((4, 16, 16, 3), np.uint8)
    # When they are motion-interpolated
    # Then a PostprocessError carries ffmpeg's exit status and its own explanation
    with pytest.raises(PostprocessError, match=r"(?s)exited with status \d+: .*Height or width < 32"):
        interpolate_motion(clip, 7, 14)


def test_frames_that_are_not_t_h_w_3_uint8_are_refused() -> None:
    # Given frames of the wrong dtype or shape
    # When they are post-processed
    # Then PostprocessError names the problem
    with pytest.raises(PostprocessError, match="uint8"):
        interpolate_blend(np.zeros((2, H, W, 3), np.float32), 7, 21)
    with pytest.raises(PostprocessError, match="T >= 1"):
        upscale_lanczos(np.zeros((0, H, W, 3), np.uint8), 2)


# upscaling --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [2, 4])
def test_lanczos_upscale_multiplies_width_and_height_by_the_factor(factor: int) -> None:
    # Given a 3-frame 64x32 clip
    clip = moving_square(3)
    # When it is upscaled
    out = upscale_lanczos(clip, factor)
    # Then each side is multiplied by the factor and flat areas keep their colour
    assert out.shape == (3, H * factor, W * factor, 3) and out.dtype == np.uint8
    assert tuple(out[1, 16 * factor, 16 * factor]) == (200, 200, 200)


# validation -------------------------------------------------------------------------------------------

def test_a_valid_field_gives_a_spec_and_no_errors() -> None:
    # Given a field asking for both stages within the limits
    raw = {"interpolate": {"fps": 24, "method": "motion"}, "upscale": {"factor": 2, "method": "lanczos"}}
    # When it is validated against a 1024x576 render at 7 fps
    spec, errors = validate_postprocess(raw, render_fps=7, width=1024, height=576)
    # Then it parses into the typed spec
    assert errors == []
    assert spec == PostprocessSpec(interpolate=InterpolateSpec(fps=24, method="motion"),
                                   upscale=UpscaleSpec(factor=2, method="lanczos"))


def test_an_empty_field_asks_for_nothing() -> None:
    # Given an empty field or all-null stages
    # When validated
    # Then there is no spec and no error
    for raw in ({}, {"interpolate": None, "upscale": None}):
        assert validate_postprocess(raw, render_fps=7, width=64, height=64) == (None, [])


@pytest.mark.parametrize("fps", [7, 6, 0, -3])
def test_a_target_fps_at_or_below_the_render_fps_is_an_error(fps: int) -> None:
    # Given a target fps that is not above the 7 fps render
    # When validated
    # Then the fps field is flagged and the message names the render fps
    [(field, message)] = errors_for({"interpolate": {"fps": fps, "method": "blend"}})
    assert field == "postprocess.interpolate.fps" and "above the render fps (7)" in message


def test_a_target_fps_over_the_cap_is_an_error() -> None:
    # Given a target fps above max_fps
    # When validated
    # Then the fps field is flagged with the cap
    assert errors_for({"interpolate": {"fps": 61, "method": "blend"}}) == [
        ("postprocess.interpolate.fps", "must be at most 60, got 61")]
    assert errors_for({"interpolate": {"fps": 31, "method": "blend"}}, max_fps=30)[0][1] == "must be at most 30, got 31"


def test_an_upscale_factor_of_3_is_an_error() -> None:
    # Given factor 3, which is neither 2 nor 4
    # When validated
    # Then the factor field is flagged with the allowed values
    assert errors_for({"upscale": {"factor": 3, "method": "lanczos"}}) == [
        ("postprocess.upscale.factor", "must be 2 or 4, got 3")]


def test_unknown_methods_are_errors() -> None:
    # Given unknown interpolation and upscale methods
    raw = {"interpolate": {"fps": 24, "method": "rife"}, "upscale": {"factor": 2, "method": "esrgan"}}
    # When validated
    # Then both method fields are flagged with the allowed values
    assert dict(errors_for(raw)) == {
        "postprocess.interpolate.method": "must be 'blend', 'motion' or 'learned', got 'rife'",
        "postprocess.upscale.method": "must be 'lanczos' or 'learned', got 'esrgan'"}


def test_unknown_fields_are_errors_at_every_level() -> None:
    # Given unknown fields at the top and inside a stage
    raw = {"sharpen": True, "interpolate": {"fps": 24, "method": "blend", "strength": 1}}
    # When validated
    # Then each is flagged by its own path
    assert sorted(errors_for(raw)) == [("postprocess.interpolate.strength", "unknown field; remove it"),
                                       ("postprocess.sharpen", "unknown field; remove it")]


def test_wrong_types_and_missing_fields_are_errors() -> None:
    # Given a string fps, a missing method and non-object fields
    # When validated
    # Then each is flagged (strict mode: no coercion from strings)
    assert errors_for({"interpolate": {"fps": "24", "method": "blend"}}) == [
        ("postprocess.interpolate.fps", "must be an integer, got '24'")]
    assert errors_for({"upscale": {"factor": 2}}) == [("postprocess.upscale.method", "is required")]
    assert errors_for({"upscale": "2x"})[0][0] == "postprocess.upscale"
    assert errors_for([])[0][0] == "postprocess"  # type: ignore[arg-type]


def test_an_upscale_over_the_pixel_cap_is_an_error() -> None:
    # Given a 1024x576 render: 4x is exactly 4096x2304, the default cap
    # When it is validated against the default cap, then a lower one
    # Then 4x passes the default cap, and fails the lower one on the factor field with the sizes named
    spec, errors = validate_postprocess({"upscale": {"factor": 4, "method": "lanczos"}},
                                        render_fps=7, width=1024, height=576)
    assert errors == [] and spec is not None
    [(field, message)] = errors_for({"upscale": {"factor": 4, "method": "lanczos"}}, max_pixels=1920 * 1080)
    assert field == "postprocess.upscale.factor" and "4096x2304" in message and str(1920 * 1080) in message


# the pipeline -----------------------------------------------------------------------------------------

def test_run_postprocess_interpolates_then_upscales_and_records_each_stage() -> None:
    # Given a 6-frame 7 fps clip and a spec with both stages
    spec = PostprocessSpec(interpolate=InterpolateSpec(fps=21, method="blend"),
                           upscale=UpscaleSpec(factor=2, method="lanczos"))
    calls: list[tuple[str, int, int]] = []
    # When it is post-processed
    out, fps, records = run_postprocess(moving_square(), 7, spec, on_stage=lambda *a: calls.append(a))
    # Then on_stage was called for each stage in order, and the result and records match
    assert calls == [("interpolate", 0, 2), ("upscale", 1, 2)]
    assert out.shape == (18, 2 * H, 2 * W, 3) and fps == 21
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in records] == [
        {"stage": "interpolate", "method": "blend", "from_fps": 7, "to_fps": 21, "frames": 18},
        {"stage": "upscale", "method": "lanczos", "factor": 2, "from_size": [W, H], "to_size": [2 * W, 2 * H],
         "frames": 18}]
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in records)


def test_run_postprocess_without_a_spec_returns_the_frames_unchanged() -> None:
    # Given no spec
    clip = moving_square()
    # When post-processed
    out, fps, records = run_postprocess(clip, 7, None)
    # Then the frames, fps and an empty record list come back
    assert out is clip and fps == 7 and records == []


@pytest.mark.parametrize("spec", [
    PostprocessSpec(interpolate=InterpolateSpec(fps=21, method="blend")),
    PostprocessSpec(interpolate=InterpolateSpec(fps=21, method="motion")),
    PostprocessSpec(upscale=UpscaleSpec(factor=2, method="lanczos")),
], ids=["blend", "motion", "lanczos"])
def test_should_stop_cancels_a_stage_partway_with_postprocess_canceled(spec: PostprocessSpec) -> None:
    # Given a should_stop that turns True on its 4th check (inside the stage's frame loop)
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks >= 4

    # When the stage runs
    # Then it raises PostprocessCanceled after exactly those 4 checks, without finishing
    with pytest.raises(PostprocessCanceled):
        run_postprocess(moving_square(), 7, spec, should_stop=should_stop)
    assert checks == 4


def test_a_motion_interpolated_clip_encodes_to_mp4_at_the_new_fps(tmp_path: Path) -> None:
    # Given a 6-frame 7 fps clip motion-interpolated to 21 fps
    out, fps, _ = run_postprocess(moving_square(), 7,
                                  PostprocessSpec(interpolate=InterpolateSpec(fps=21, method="motion")))
    # When it is encoded to mp4 at the new fps and decoded back
    path = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1)
    writer.send(None)
    for frame in out:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    # Then the video has 18 frames at 21 fps and the original size
    assert sum(1 for _ in reader) == 18
    assert meta["fps"] == 21 and tuple(meta["size"]) == (W, H)
