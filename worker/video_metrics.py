"""What a rendered clip did, measured on its decoded frames: how much it moves, how much it changes, whether its
brightness flickers, and how close its first frame stays to the image it was made from. The worker measures every
render after decoding (worker/produce.py) and the job's result carries the numbers as `metrics`
(models/schemas.py VideoMetrics), so a sweep over motion_bucket_id can be read as numbers, not only by eye.

Frames are (T, H, W, 3) uint8, the source image (H, W, 3) uint8 at the same size (the fitted image the pipeline
was conditioned on). All four are computed on luma, Y = 0.299 R + 0.587 G + 0.114 B (Rec. 601, Pillow's "L"):

- motion (px/frame): the mean magnitude of the dense optical flow from each frame to the next, in pixels of the
  measured frames, over the trackable pixels of each pair (those with texture to follow), averaged over all
  consecutive pairs. The estimator (pyramidal Lucas-Kanade) and why it is not ffmpeg's are in
  worker/optical_flow.py.
- frame_difference (levels/frame): the mean absolute difference of consecutive frames, over pixels and channels,
  in 8-bit levels (0-255). Counts every change, motion and flicker and noise alike.
- flicker (levels): the mean absolute second difference of the frames' mean luma, halved:
  mean |L[t+1] - 2 L[t] + L[t-1]| / 2. A clip alternating between two brightnesses a and b scores |a - b|; a still
  clip, one that moves at constant brightness, or one that fades steadily scores about 0.
- first_frame_similarity (SSIM): the structural similarity (Wang et al. 2004; 7x7 uniform window, K1 = 0.01,
  K2 = 0.03) of the source image and the first frame, 1 = identical, about 0 for unrelated content. SSIM rather
  than PSNR because it is bounded (an identical frame has PSNR infinity, which JSON cannot carry) and follows
  structure rather than a small overall tint.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from worker.optical_flow import mean_motion

_SSIM_RADIUS = 3  # 7x7
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

UNITS = {"motion": "px/frame", "frame_difference": "levels/frame", "flicker": "levels",
         "first_frame_similarity": "SSIM"}


@dataclass(frozen=True)
class Measured:
    """The four measurements of one clip, and what they were measured on."""

    motion: float
    frame_difference: float
    flicker: float
    first_frame_similarity: float
    frames: int
    width: int
    height: int

    def as_result(self) -> dict[str, object]:
        """The job result's `metrics` object: each measurement as {"value", "unit"}, and the frames it read."""
        out: dict[str, object] = {name: {"value": round(float(getattr(self, name)), 4), "unit": unit}
                                  for name, unit in UNITS.items()}
        out["measured_on"] = {"frames": self.frames, "width": self.width, "height": self.height}
        return out


def measure(frames: np.ndarray, source_image: np.ndarray) -> Measured:
    """Measure a clip against the image it was rendered from (see the module docstring for each definition).
    A source image of another size is resized to the frames' size first. Raises ValueError for frames or an image
    of the wrong shape, or should a measurement come out NaN or infinite."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 \
            or frames.shape[0] < 1:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {getattr(frames, 'shape', type(frames))}")
    t, h, w, _ = frames.shape
    source = np.asarray(source_image)
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 source image, got {source.dtype} {source.shape}")
    if source.shape[:2] != (h, w):
        source = np.asarray(Image.fromarray(source).resize((w, h), Image.Resampling.LANCZOS))
    luma = [_luma(f) for f in frames]
    measured = Measured(motion=mean_motion(luma), frame_difference=frame_difference(frames), flicker=flicker(luma),
                        first_frame_similarity=ssim(_luma(source), luma[0]), frames=t, width=w, height=h)
    bad = [name for name in UNITS if not math.isfinite(getattr(measured, name))]
    if bad:  # JSON has no NaN or infinity: better no metrics than a result no client can parse
        raise ValueError(f"measuring gave a non-finite {', '.join(bad)}")
    return measured


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32) @ _LUMA


def frame_difference(frames: np.ndarray) -> float:
    if len(frames) < 2:
        return 0.0
    total = 0.0
    for a, b in itertools.pairwise(frames):
        total += float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    return total / (len(frames) - 1)


def flicker(luma: list[np.ndarray]) -> float:
    if len(luma) < 3:
        return 0.0
    means = np.array([float(y.mean()) for y in luma])
    return float(np.abs(means[2:] - 2 * means[1:-1] + means[:-2]).mean() / 2)


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two luma images of one size over every whole 7x7 window (the whole image if smaller)."""
    r = min(_SSIM_RADIUS, (min(x.shape) - 1) // 2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x64, y64 = x.astype(np.float64), y.astype(np.float64)

    def mean(img: np.ndarray) -> np.ndarray:
        n = 2 * r + 1
        c = np.pad(img, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        out: np.ndarray = (c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]) / (n * n)
        return out

    mx, my = mean(x64), mean(y64)
    vx = mean(x64 * x64) - mx * mx
    vy = mean(y64 * y64) - my * my
    cxy = mean(x64 * y64) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    value = float(s.mean())
    return value if math.isfinite(value) else 0.0
