"""Post-processing of rendered frames, after denoising and before encoding: frame interpolation to a higher
fps ("blend": linear cross-fade, "motion": ffmpeg's motion-compensated minterpolate) and lanczos upscaling.
The "learned" methods (RIFE interpolation, Real-ESRGAN-family upscaling) live in worker/learned.py; they need
weights, so a job may ask for them only where SVDQ_INTERPOLATE_WEIGHTS / SVDQ_UPSCALE_WEIGHTS are set. This
module never imports torch; it reaches the learned models only through the `LearnedStages` shape below.

Frames are always (T, H, W, 3) uint8. The job field (models/postprocess.py, where the API checks it at submit
time) looks like ``{"interpolate": {"fps": 24, "method": "blend"}, "upscale": {"factor": 2, "method": "lanczos"}}``;
`run_postprocess` applies it in the worker. The interpolation timing model is in worker/frames.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import imageio_ffmpeg
import numpy as np
from PIL import Image

from models.postprocess import PostprocessSpec, unavailable_message
from worker.frames import (
    PostprocessError,
    PostprocessUnavailable,
    StopCheck,
    check_fps,
    check_frames,
    check_stop,
    frame_schedule,
    interpolated_frame_count,
)

StageCallback = Callable[[str, int, int], None]


class LearnedInterpolator(Protocol):
    def __call__(self, frames: np.ndarray, src_fps: int, dst_fps: int, *,
                 should_stop: StopCheck | None = None) -> np.ndarray: ...
    def record(self) -> dict[str, Any]: ...


class LearnedUpscaler(Protocol):
    def __call__(self, frames: np.ndarray, factor: int, *, should_stop: StopCheck | None = None) -> np.ndarray: ...
    def record(self) -> dict[str, Any]: ...


class LearnedStages(Protocol):
    """What run_postprocess needs of the learned models a worker loaded (worker.learned.LearnedModels)."""

    @property
    def interpolator(self) -> LearnedInterpolator | None: ...
    @property
    def upscaler(self) -> LearnedUpscaler | None: ...
    def stages(self) -> frozenset[str]: ...

# minterpolate only emits frames up to the second-to-last input frame's timestamp; feeding this many extra
# copies of the last frame lets it cover the whole clip (the surplus is trimmed off).
_MOTION_TAIL = 2
_STDERR_TAIL = 2000


def interpolate_blend(frames: np.ndarray, src_fps: int, dst_fps: int, *,
                      should_stop: StopCheck | None = None) -> np.ndarray:
    """Output frame k sits at source position p = k * src_fps / dst_fps and is the linear blend
    (1 - frac(p)) * frames[floor(p)] + frac(p) * frames[floor(p) + 1], rounded half up; positions at or past
    the last frame give the last frame. Exact positions are computed in integers, so frames that land on a
    source frame are copied bit for bit."""
    check_frames(frames)
    check_fps(src_fps, dst_fps)
    n, h, w, _ = frames.shape
    count = interpolated_frame_count(n, src_fps, dst_fps)
    out = np.empty((count, h, w, 3), dtype=np.uint8)
    for k, i0, frac in frame_schedule(n, src_fps, dst_fps):
        check_stop(should_stop)
        if frac is None:
            out[k] = frames[i0]
        else:
            t = np.float32(frac)
            mixed = frames[i0].astype(np.float32) * (np.float32(1) - t) + frames[i0 + 1].astype(np.float32) * t
            out[k] = np.clip(np.floor(mixed + np.float32(0.5)), 0, 255).astype(np.uint8)
    return out


def _padded(frames: np.ndarray) -> Iterator[np.ndarray]:
    yield from frames
    for _ in range(_MOTION_TAIL):
        yield frames[-1]


def interpolate_motion(frames: np.ndarray, src_fps: int, dst_fps: int, *,
                       should_stop: StopCheck | None = None) -> np.ndarray:
    """Motion-compensated interpolation with ffmpeg's ``minterpolate=fps=DST:mi_mode=mci``.

    Raw rgb24 frames are piped in (from a writer thread) and read back frame by frame, checking should_stop
    between output frames (a cancel kills ffmpeg). minterpolate stops at the second-to-last input frame's
    timestamp, so the input is padded with _MOTION_TAIL copies of the last frame; the output is then trimmed
    to exactly `interpolated_frame_count` frames, or padded with copies of its last frame should ffmpeg
    still give fewer (the tail then holds still, as the last source frame does). Source frames land on
    output frames k * dst / src whenever that is an integer, to within the rounding of ffmpeg's rgb24 ->
    yuv444p -> rgb24 conversion (a level or two; yuv444p is forced so chroma is never subsampled).
    Raises PostprocessError if ffmpeg fails."""
    check_frames(frames)
    check_fps(src_fps, dst_fps)
    n, h, w, _ = frames.shape
    count = interpolated_frame_count(n, src_fps, dst_fps)
    check_stop(should_stop)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(src_fps), "-i", "-",
           "-vf", f"format=yuv444p,minterpolate=fps={dst_fps}:mi_mode=mci", "-an",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise PostprocessError(f"could not start ffmpeg for motion interpolation: {exc}") from exc
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    assert stdin is not None and stdout is not None and stderr is not None
    stop = threading.Event()
    err_chunks: list[bytes] = []

    def feed() -> None:
        try:
            for frame in _padded(frames):
                if stop.is_set():
                    break
                stdin.write(np.ascontiguousarray(frame).tobytes())
        except OSError:  # ffmpeg closed its input (it failed or was killed); its exit status tells why
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def drain() -> None:
        err_chunks.append(stderr.read())

    threads = [threading.Thread(target=feed, name="minterpolate-in", daemon=True),
               threading.Thread(target=drain, name="minterpolate-err", daemon=True)]
    for t in threads:
        t.start()
    frame_bytes = h * w * 3
    out: list[np.ndarray] = []
    partial = 0
    try:
        while True:
            check_stop(should_stop)
            buf = stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                partial = len(buf)
                break
            if len(out) < count:  # keep draining past `count` so ffmpeg can finish and exit cleanly
                out.append(np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3))
        rc = proc.wait()
    except BaseException:
        stop.set()
        proc.kill()
        proc.wait()
        raise
    finally:
        for t in threads:
            t.join()
        stdout.close()
        stderr.close()
    tail = b"".join(err_chunks).decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
    if rc != 0:
        raise PostprocessError(f"ffmpeg minterpolate exited with status {rc}: {tail or '(no stderr)'}")
    if not out or partial:
        raise PostprocessError(f"ffmpeg minterpolate gave {len(out)} whole frames and {partial} stray bytes "
                               f"for {n} {w}x{h} input frames: {tail or '(no stderr)'}")
    while len(out) < count:
        out.append(out[-1])
    return np.stack(out)


# upscaling --------------------------------------------------------------------------------------------

def upscale_lanczos(frames: np.ndarray, factor: int, *, should_stop: StopCheck | None = None) -> np.ndarray:
    """Resize every frame to (factor * W, factor * H) with Pillow's LANCZOS filter."""
    check_frames(frames)
    if factor < 1:
        raise PostprocessError(f"upscale factor must be positive, got {factor}")
    t, h, w, _ = frames.shape
    size = (w * factor, h * factor)
    out = np.empty((t, h * factor, w * factor, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        check_stop(should_stop)
        out[i] = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS))
    return out


# pipeline ---------------------------------------------------------------------------------------------

def run_postprocess(frames: np.ndarray, fps: int, spec: PostprocessSpec | None, *,
                    on_stage: StageCallback | None = None, should_stop: StopCheck | None = None,
                    learned: LearnedStages | None = None) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
    """Apply the spec's stages in order (interpolate, then upscale) and return (frames, fps, records).

    Before each stage, ``on_stage(name, index, total)`` is called with index = stages already done (0-based,
    so it can feed a progress "step of total" directly). should_stop is checked before every frame (every
    chunk for the learned methods) inside the stages; when it returns True, PostprocessCanceled is raised.
    A "learned" method runs the model in `learned`; if that stage has none, PostprocessUnavailable is raised
    before any stage runs. Each record describes one stage, e.g.
    {"stage": "interpolate", "method": "blend", "from_fps": 7, "to_fps": 21, "frames": 18, "seconds": 0.01}
    or {"stage": "upscale", "method": "lanczos", "factor": 2, "from_size": [64, 32], "to_size": [128, 64],
    "frames": 18, "seconds": 0.02}; learned stages add the model's record (architecture, weights file and
    sha256 prefix, device, chunk)."""
    check_frames(frames)
    records: list[dict[str, Any]] = []
    if spec is None:
        return frames, fps, records
    stages = [name for name, part in (("interpolate", spec.interpolate), ("upscale", spec.upscale)) if part]
    have = learned.stages() if learned is not None else frozenset()
    for name, part in (("interpolate", spec.interpolate), ("upscale", spec.upscale)):
        if part is not None and part.method == "learned" and name not in have:
            raise PostprocessUnavailable(f"this worker has no learned {name} model: "
                                         f"{unavailable_message(name)}")
    for index, stage in enumerate(stages):
        if on_stage is not None:
            on_stage(stage, index, len(stages))
        check_stop(should_stop)
        start = time.monotonic()
        extra: dict[str, Any] = {}
        if stage == "interpolate":
            assert spec.interpolate is not None
            method, to_fps = spec.interpolate.method, spec.interpolate.fps
            if method == "learned":
                assert learned is not None and learned.interpolator is not None
                fn: Callable[..., np.ndarray] = learned.interpolator
            else:
                fn = interpolate_motion if method == "motion" else interpolate_blend
            frames = fn(frames, fps, to_fps, should_stop=should_stop)
            if method == "learned":
                extra = learned.interpolator.record()  # type: ignore[union-attr]
            record: dict[str, Any] = {"stage": stage, "method": method, "from_fps": fps, "to_fps": to_fps}
            fps = to_fps
        else:
            assert spec.upscale is not None
            _t, h, w, _ = frames.shape
            factor = spec.upscale.factor
            if spec.upscale.method == "learned":
                assert learned is not None and learned.upscaler is not None
                frames = learned.upscaler(frames, factor, should_stop=should_stop)
                extra = learned.upscaler.record()
            else:
                frames = upscale_lanczos(frames, factor, should_stop=should_stop)
            record = {"stage": stage, "method": spec.upscale.method, "factor": factor,
                      "from_size": [w, h], "to_size": [w * factor, h * factor]}
        record.update(extra)
        record["frames"] = int(frames.shape[0])
        record["seconds"] = round(time.monotonic() - start, 3)
        records.append(record)
    return frames, fps, records
