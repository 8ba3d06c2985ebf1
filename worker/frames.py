"""What every post-processing stage shares, weight-free (worker/postprocess.py) or learned (worker/learned.py):
the frame checks, the stop check, the errors, and the interpolation time schedule.

Frames are always (T, H, W, 3) uint8. Timing model shared by every interpolation method: source frame i sits at
time i / src_fps and shows until (i + 1) / src_fps, so a clip of n frames lasts n / src_fps seconds.
Interpolation keeps that duration: it produces `interpolated_frame_count(n, src, dst)` frames, frame k at time
k / dst_fps. Times after the last source frame's timestamp (the last source frame's display interval) show the
last source frame."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

StopCheck = Callable[[], bool]



class PostprocessError(Exception):
    """Post-processing could not run (bad frames, ffmpeg failed); the message says why."""


class PostprocessCanceled(Exception):
    """`should_stop()` returned True while a stage was running."""


class PostprocessUnavailable(PostprocessError):
    """The job asks for a learned method whose weights this worker does not have."""


def check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[-1] != 3 or frames.shape[0] < 1:
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise PostprocessError(f"expected (T, H, W, 3) uint8 frames with T >= 1, got {desc}")


def check_fps(src_fps: int, dst_fps: int) -> None:
    if src_fps < 1 or dst_fps < 1:
        raise PostprocessError(f"fps must be positive, got {src_fps} -> {dst_fps}")


def check_stop(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise PostprocessCanceled("post-processing was canceled")


def interpolated_frame_count(n: int, src_fps: int, dst_fps: int) -> int:
    """Frames needed to show an n-frame clip at src_fps for the same duration at dst_fps.

    Duration is n / src_fps (each frame shows for 1/src_fps), so the count is n * dst_fps / src_fps,
    rounded half up in integer arithmetic (6 frames at 7 fps -> 21 fps: exactly 18). It is not
    (n - 1) * dst / src + 1 (which keeps first and last timestamps instead), because encoders and players
    count duration as frames / fps. A non-empty clip always gives at least one frame."""
    if n < 0 or src_fps < 1 or dst_fps < 1:
        raise ValueError(f"need n >= 0 and positive fps, got n={n}, {src_fps} -> {dst_fps}")
    if n == 0:
        return 0
    return max(1, (2 * n * dst_fps + src_fps) // (2 * src_fps))


def frame_schedule(n: int, src_fps: int, dst_fps: int) -> Iterator[tuple[int, int, float | None]]:
    """(output index k, source frame i, t) for every output frame: t None copies source frame i bit for bit
    (k lands on it, or lies past the last source frame), else the frame sits t of the way from i to i + 1.
    Positions are computed in integers so that landing on a source frame is exact."""
    for k in range(interpolated_frame_count(n, src_fps, dst_fps)):
        i0, rem = divmod(k * src_fps, dst_fps)
        if i0 >= n - 1:
            yield k, n - 1, None
        else:
            yield k, i0, (rem / dst_fps if rem else None)
