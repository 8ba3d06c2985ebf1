"""Dense optical flow for measuring motion (worker/video_metrics.py): how far the visible content of a clip moves
from each frame to the next, in pixels.

Pyramidal Lucas-Kanade (Bouguet's coarse-to-fine scheme, the one behind OpenCV's calcOpticalFlowPyrLK), dense: every
pixel gets the flow that best explains its 9x9 window, on a Gaussian pyramid of the luma downscaled to at most
FLOW_SIDE pixels on its long side, and the flow is scaled back to the frames' pixels. The `motion` interpolation's
estimator is ffmpeg's minterpolate, whose block vectors never leave the filter (its rawvideo output drops them),
so it cannot be read out; this one needs nothing beyond NumPy and Pillow, is sub-pixel (a clip shifted k pixels a
frame measures k to within about 2% on textured content, k = 1 to 12) and costs tens of milliseconds a frame pair.

Only trackable pixels count: those whose window has gradient in every direction (the structure tensor's smaller
eigenvalue at least TRACKABLE, in (levels/px)^2 at the working size). A flat sky or a plain wall has no motion
that can be seen, and averaging its zeros in would make the same camera pan score lower over a plainer image. A
clip with no trackable pixel at all scores 0. Pixels whose flow leaves the frame have no counterpart in the next
frame and are left out too. Every frame's luma has its mean and contrast matched to the first frame's before the
flow is worked out, so a clip whose brightness flickers does not seem to move (that is the flicker score's job).
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

# the working size's long side: 1024x576 is measured at 384x216 (within about 2% of 512x288's answer, at half
# the cost)
FLOW_SIDE = 384
# the structure tensor's smaller eigenvalue a pixel needs to be trackable: an RMS gradient of 4 levels/px across
# its weaker direction, after the pyramid's smoothing
TRACKABLE = 16.0
_WINDOW = 4  # window radius: 9x9
_ITERATIONS = 3  # Lucas-Kanade steps per pyramid level
_MIN_LEVEL_SIDE = 16
_MAX_LEVELS = 5
# added to the structure tensor's diagonal so a window without gradient has a solution (zero flow)
_RIDGE = 1.0


def mean_motion(luma: list[np.ndarray]) -> float:
    """The mean flow magnitude over consecutive pairs of luma frames, in pixels of those frames (px/frame)."""
    if len(luma) < 2:
        return 0.0
    h, w = luma[0].shape
    scale = max(1.0, max(h, w) / FLOW_SIDE)
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    sx, sy = w / size[0], h / size[1]
    small = [_resize(y, size) for y in luma] if size != (w, h) else luma
    pyramids = [_pyramid(y) for y in _matched(small)]
    total = 0.0
    for a, b in itertools.pairwise(pyramids):
        u, v, trackable = _flow(a, b)
        total += _mean_magnitude(u * sx, v * sy, u, v, trackable)
    return total / (len(luma) - 1)


def _matched(luma: list[np.ndarray]) -> list[np.ndarray]:
    """Each frame's luma with its mean and contrast (standard deviation) matched to the first frame's: Lucas-Kanade
    assumes a point keeps its brightness, and a frame that only got brighter would otherwise seem to move."""
    mean0, std0 = float(luma[0].mean()), float(luma[0].std())
    out = []
    for y in luma:
        mean, std = float(y.mean()), float(y.std())
        gain = np.float32(std0 / std if std > 1e-3 and std0 > 1e-3 else 1.0)
        out.append((y - np.float32(mean)) * gain + np.float32(mean0))
    return out


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32)).resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def _blur(img: np.ndarray) -> np.ndarray:
    """The 5-tap binomial filter (1 4 6 4 1) / 16 along both axes, the edge repeated outward."""
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (2, 2)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        taps = [p[i:i + n] if axis == 0 else p[:, i:i + n] for i in range(5)]
        out = (taps[0] + taps[4] + 4 * (taps[1] + taps[3]) + 6 * taps[2]) * np.float32(1 / 16)
    return out


def _pyramid(img: np.ndarray) -> list[np.ndarray]:
    """A Gaussian pyramid, finest first: the frame smoothed, then each level blurred and subsampled 2:1, until a
    side would drop under _MIN_LEVEL_SIDE. Smoothing keeps the gradients honest (near the Nyquist rate central
    differences misjudge how a frame changes, and the Lucas-Kanade steps then oscillate instead of converging)."""
    levels = [_blur(img)]
    while len(levels) < _MAX_LEVELS and min(levels[-1].shape) // 2 >= _MIN_LEVEL_SIDE:
        levels.append(_blur(levels[-1])[::2, ::2])
    return levels


def _box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """The mean over the (2r+1)^2 window around each pixel of the last two axes, the edge repeated outward."""
    n = 2 * r + 1
    out = img
    for axis in (img.ndim - 1, img.ndim - 2):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        out = _running_sum(np.pad(out, pad, mode="edge"), n, axis)
    return out * np.float32(1 / (n * n))


def _running_sum(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Sums of n consecutive elements along an axis (its length shrinks by n - 1), built from sums of 1, 2, 4, ...
    elements: about log2(n) whole-array additions, where a cumulative sum would lose float32's precision."""
    def part(x: np.ndarray, start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    length = a.shape[axis] - n + 1
    total: np.ndarray | None = None
    block, size, start = a, 1, 0
    while True:
        if n & size:
            piece = part(block, start, start + length)
            total = piece.copy() if total is None else total + piece
            start += size
        if size * 2 > n:
            break
        block = part(block, 0, block.shape[axis] - size) + part(block, size, block.shape[axis])
        size *= 2
    assert total is not None
    return total


def _gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = (img[:, 2:] - img[:, :-2]) * 0.5
    gy[1:-1, :] = (img[2:, :] - img[:-2, :]) * 0.5
    return gx, gy


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return xs, ys


def _warp(img: np.ndarray, u: np.ndarray, v: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """img sampled bilinearly at (x + u, y + v), clamped to the frame."""
    h, w = img.shape
    xs, ys = grid
    x = np.clip(xs + u, 0, w - 1)
    y = np.clip(ys + v, 0, h - 1)
    x0 = np.minimum(x.astype(np.intp), max(w - 2, 0))  # x >= 0, so the cast floors
    y0 = np.minimum(y.astype(np.intp), max(h - 2, 0))
    fx, fy = x - x0.astype(np.float32), y - y0.astype(np.float32)
    flat = img.ravel()
    i00 = y0 * w + x0
    i10 = i00 + (1 if w > 1 else 0)
    i01 = i00 + (w if h > 1 else 0)
    top = flat[i00] + (flat[i10] - flat[i00]) * fx
    bottom = flat[i01] + (flat[i01 + (i10 - i00)] - flat[i01]) * fx
    out: np.ndarray = top + (bottom - top) * fy
    return out


def _upsample(flow: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A coarser level's flow on the next finer level: twice the size, twice the displacement."""
    img = Image.fromarray(np.ascontiguousarray(flow, dtype=np.float32)).resize((shape[1], shape[0]),
                                                                               Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) * 2


def _flow(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense flow (u, v) from a to b at the finest level, and which of its pixels are trackable: coarse to fine, a
    few Lucas-Kanade steps per level. Each step solves every window's 2x2 normal equations for the flow at its
    centre, with b warped by each pixel's own flow so far and the residual carried over to the centre's flow to
    first order (the terms in sum(g g^T u) below). Without that carry-over the windows would mix their
    neighbours' flows into their own and the steps would amplify rather than damp the flow's fine detail."""
    u = v = np.zeros(a[-1].shape, dtype=np.float32)
    trackable = np.zeros(a[0].shape, dtype=bool)
    for level in range(len(a) - 1, -1, -1):
        a_l, b_l = a[level], b[level]
        if u.shape != a_l.shape:
            u, v = _upsample(u, a_l.shape), _upsample(v, a_l.shape)
        grid = _grid(a_l.shape)
        gx, gy = _gradients(a_l)
        gxx, gyy, gxy = gx * gx, gy * gy, gx * gy
        ixx, iyy, ixy = _box_mean(np.stack([gxx, gyy, gxy]), _WINDOW)
        if level == 0:
            half_trace = (ixx + iyy) / 2
            lam_min = half_trace - np.sqrt(np.maximum(half_trace ** 2 - (ixx * iyy - ixy * ixy), 0))
            trackable = lam_min >= TRACKABLE
        ixx += _RIDGE
        iyy += _RIDGE
        inv_det = 1 / (ixx * iyy - ixy * ixy)
        for _ in range(_ITERATIONS):
            it = _warp(b_l, u, v, grid) - a_l
            bu, bv = _box_mean(np.stack([gxx * u + gxy * v - gx * it, gxy * u + gyy * v - gy * it]), _WINDOW)
            u = (iyy * bu - ixy * bv) * inv_det
            v = (ixx * bv - ixy * bu) * inv_det
    return u, v, trackable


def _mean_magnitude(u: np.ndarray, v: np.ndarray, u_work: np.ndarray, v_work: np.ndarray,
                    trackable: np.ndarray) -> float:
    """The mean of sqrt(u^2 + v^2) over the pixels whose flow lands inside the next frame (the others have no
    counterpart there: content leaving the frame)."""
    h, w = u_work.shape
    xs, ys = _grid((h, w))
    inside = trackable & (xs + u_work >= 0) & (xs + u_work <= w - 1) & (ys + v_work >= 0) & (ys + v_work <= h - 1)
    if not inside.any():
        return 0.0
    return float(np.sqrt(u[inside] ** 2 + v[inside] ** 2).mean())
