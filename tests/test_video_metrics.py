"""The video measurements (worker/video_metrics.py, worker/optical_flow.py) on synthetic clips whose answers are
known: a still clip scores no motion, no difference and no flicker; content shifted k pixels a frame scores k
px/frame, at the output size whatever size the flow is worked out at; a clip alternating brightness scores high
flicker and little motion; a first frame equal to its image scores SSIM 1 and an unrelated one near 0."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.schemas import VideoMetrics
from worker import optical_flow
from worker.video_metrics import measure


def texture(h: int, w: int, *, seed: int = 0, cell: int = 8) -> np.ndarray:
    """Smooth random colour blobs about `cell` pixels across: texture everywhere for the flow to follow."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize(((w // cell + 1) * cell, (h // cell + 1) * cell), Image.Resampling.BICUBIC)
    return np.asarray(big)[:h, :w]


def shifted(h: int, w: int, frames: int, dx: int, dy: int = 0, *, seed: int = 0) -> np.ndarray:
    """A window moving over a larger texture by (dx, dy) pixels a frame: its content moves by (-dx, -dy)."""
    big = texture(h + abs(dy) * frames, w + abs(dx) * frames, seed=seed)
    x0 = 0 if dx >= 0 else abs(dx) * (frames - 1)
    y0 = 0 if dy >= 0 else abs(dy) * (frames - 1)
    return np.stack([big[y0 + t * dy:y0 + t * dy + h, x0 + t * dx:x0 + t * dx + w] for t in range(frames)])


def test_a_still_clip_scores_no_motion_no_difference_and_no_flicker() -> None:
    # Given 8 copies of one textured frame
    image = texture(72, 128)
    m = measure(np.stack([image] * 8), image)
    # Then nothing moved, nothing changed, nothing flickered, and the first frame is the image
    assert m.motion == pytest.approx(0, abs=0.01)
    assert m.frame_difference == 0 and m.flicker == 0
    assert m.first_frame_similarity == pytest.approx(1.0, abs=1e-6)
    assert (m.frames, m.width, m.height) == (8, 128, 72)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_content_shifted_k_pixels_a_frame_scores_k_px_per_frame(k: int) -> None:
    # Given a clip at a size the flow works on directly (its long side under FLOW_SIDE), moving k px a frame
    clip = shifted(144, 256, 10, k)
    # Then its motion is k px/frame (the issue asks for 15%; the estimator does far better on texture)
    assert measure(clip, clip[0]).motion == pytest.approx(k, rel=0.05)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_at_the_svd_xt_size_the_motion_is_in_pixels_of_the_output_not_of_the_flows_working_size(k: int) -> None:
    # Given a 1024x576 clip, which the flow works out at FLOW_SIDE on its long side, moving k px a frame
    assert optical_flow.FLOW_SIDE < 1024
    clip = shifted(576, 1024, 6, k)
    # Then the motion is scaled back to the 1024x576 frames: k, not k * FLOW_SIDE / 1024
    assert measure(clip, clip[0]).motion == pytest.approx(k, rel=0.05)


def test_motion_counts_both_directions_and_its_magnitude() -> None:
    # Given content moving 3 px left and 4 px down a frame: 5 px a frame along the diagonal
    clip = shifted(144, 256, 8, 3, -4)
    assert measure(clip, clip[0]).motion == pytest.approx(5, rel=0.05)
    # And straight down at 2 px a frame
    down = shifted(144, 256, 8, 0, -2)
    assert measure(down, down[0]).motion == pytest.approx(2, rel=0.05)


def test_motion_is_the_mean_over_the_frame_so_half_the_frame_moving_scores_half() -> None:
    # Given a clip whose left half is still and whose right half moves 4 px a frame
    moving = shifted(144, 256, 8, 4, seed=1)
    still = texture(144, 256, seed=2)
    clip = moving.copy()
    clip[:, :, :128] = still[:, :128]
    # Then the motion is about half of 4 (the seam between the halves is the only pixels neither)
    assert measure(clip, clip[0]).motion == pytest.approx(2, rel=0.15)


def test_a_clip_that_alternates_brightness_scores_high_flicker_and_little_motion() -> None:
    # Given a still textured frame shown alternately as it is and 40 levels brighter
    base = (texture(72, 128).astype(np.int16) * 180 // 255 + 20).astype(np.uint8)  # 20..200: no clipping at +40
    bright = (base.astype(np.int16) + 40).astype(np.uint8)
    clip = np.stack([base if t % 2 == 0 else bright for t in range(10)])
    m = measure(clip, base)
    # Then the flicker is the 40 levels it jumps, every frame changes by 40, and it hardly "moves"
    assert m.flicker == pytest.approx(40, rel=0.02)
    assert m.frame_difference == pytest.approx(40, rel=0.01)
    assert m.motion < 0.1
    # And so does one alternating contrast (every other frame at 70% of its levels)
    dim = (base.astype(np.float32) * 0.7).astype(np.uint8)
    m = measure(np.stack([base if t % 2 == 0 else dim for t in range(10)]), base)
    assert m.flicker > 25 and m.motion < 0.1
    # While a clip that moves 3 px a frame at steady brightness scores almost no flicker
    moving = shifted(72, 128, 10, 3)
    assert measure(moving, moving[0]).flicker < 1.0


def test_a_steady_fade_is_not_flicker() -> None:
    # Given a frame getting 4 levels brighter every frame (a first difference of 4, a second difference of 0)
    base = (texture(72, 128).astype(np.int16) // 2).astype(np.uint8)
    clip = np.stack([(base.astype(np.int16) + 4 * t).astype(np.uint8) for t in range(10)])
    m = measure(clip, base)
    assert m.frame_difference == pytest.approx(4, rel=0.01)
    assert m.flicker == pytest.approx(0, abs=0.05)


def test_the_first_frame_similarity_says_how_far_the_video_drifted_from_its_image() -> None:
    image = texture(72, 128, seed=3)
    rng = np.random.default_rng(4)
    noisy = np.clip(image.astype(np.int16) + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    same = measure(np.stack([image, image]), image).first_frame_similarity
    near = measure(np.stack([noisy, image]), image).first_frame_similarity
    other = measure(np.stack([texture(72, 128, seed=5)] * 2), image).first_frame_similarity
    # Then the same frame scores 1, a noisy copy less, and unrelated content far less (SSIM of two unrelated
    # smooth textures is not 0: their flat windows still agree on brightness)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert 0.5 < near < 0.9
    assert other < 0.3 and other < near - 0.3
    # And an image of another size is compared at the frames' size
    larger = np.asarray(Image.fromarray(image).resize((256, 144), Image.Resampling.LANCZOS))
    assert measure(np.stack([image, image]), larger).first_frame_similarity > 0.9


def test_a_flat_clip_has_nothing_to_track_and_scores_no_motion() -> None:
    # Given a clip of one flat grey (however it might be moving, nothing visible moves)
    flat = np.full((6, 64, 96, 3), 128, dtype=np.uint8)
    m = measure(flat, flat[0])
    assert m.motion == 0 and m.frame_difference == 0 and m.flicker == 0
    assert m.first_frame_similarity == pytest.approx(1.0)


def test_a_single_frame_scores_zero_for_what_needs_two() -> None:
    image = texture(32, 48)
    m = measure(image[None], image)
    assert (m.motion, m.frame_difference, m.flicker) == (0, 0, 0)


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        measure(np.zeros((4, 8, 8, 3), dtype=np.float32), np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="source image"):
        measure(np.zeros((4, 8, 8, 3), dtype=np.uint8), np.zeros((8, 8), dtype=np.uint8))


def test_a_measurement_that_is_not_a_finite_number_is_refused_not_stored(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # JSON has no NaN: the worker must get an error (and store no metrics), never a NaN in the result
    import worker.video_metrics as vm

    monkeypatch.setattr(vm, "mean_motion", lambda luma: float("nan"))
    clip = shifted(32, 48, 3, 1)
    with pytest.raises(ValueError, match="non-finite motion"):
        measure(clip, clip[0])


def test_the_result_object_carries_each_value_with_its_unit_and_parses_as_the_api_type() -> None:
    clip = shifted(72, 128, 6, 2)
    stored = measure(clip, clip[0]).as_result()
    assert {k: v["unit"] for k, v in stored.items() if k != "measured_on"} == {  # type: ignore[index]
        "motion": "px/frame", "frame_difference": "levels/frame", "flicker": "levels",
        "first_frame_similarity": "SSIM"}
    assert stored["measured_on"] == {"frames": 6, "width": 128, "height": 72}
    typed = VideoMetrics.model_validate(stored)
    assert typed.motion.value == pytest.approx(2, rel=0.05) and typed.motion.unit == "px/frame"
    assert typed.measured_on is not None and typed.measured_on.frames == 6
