"""Live previews of a render while it denoises, without the VAE: SD's 4-channel latent space projected to RGB
by a fixed linear map (the factors ComfyUI's latent previews use for SD 1.x, whose VAE latent space SVD shares),
on a few frames (first, middle, last) side by side, at the latent's own size (an eighth of the output's).

`LatentPreviewer` is called at every denoising step with the pipeline's current latents (batch, frames,
channels, h, w); it makes at most one preview per `every_s` (2 a second by default), so its cost stays a few
milliseconds a second however fast the steps are (ops/bench/preview.py measures it), and hands the JPEG to
`publish`. It never raises into the render: a preview that fails is skipped."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("svdq.worker")

# rows: latent channels 0-3; columns: R, G, B (ComfyUI's latent_formats.SD15.latent_rgb_factors)
SD_LATENT_RGB = np.array([[0.3512, 0.2297, 0.3227],
                          [0.3250, 0.4974, 0.2350],
                          [-0.2829, 0.1762, 0.2721],
                          [-0.2120, -0.2616, -0.7177]], dtype=np.float32)
EVERY_S = 0.5
FRAMES = 3
QUALITY = 70


def frame_indices(n: int, k: int = FRAMES) -> list[int]:
    """The first, the last and evenly spaced frames between: `k` of `n` (all of them when fewer)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def latents_to_rgb(latents: np.ndarray) -> np.ndarray:
    """(frames, 4, h, w) latents -> (frames, h, w, 3) uint8, as ComfyUI maps them: x @ factors, then
    (v + 1) / 2 clamped to 0..1."""
    rgb = np.einsum("fchw,cr->fhwr", latents.astype(np.float32), SD_LATENT_RGB)
    out: np.ndarray = (np.clip((rgb + 1.0) / 2.0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def strip(frames: np.ndarray) -> bytes:
    """The frames side by side, one JPEG."""
    row = np.concatenate(list(frames), axis=1)
    buf = io.BytesIO()
    Image.fromarray(row).save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def preview_jpeg(latents: Any, k: int = FRAMES) -> tuple[bytes, int, int]:
    """The preview of a (batch, frames, 4, h, w) latent tensor (torch or numpy): (JPEG, width, height). Only the
    chosen frames leave the device, projected there first when it is a torch tensor."""
    first = latents[0]
    picked = first[frame_indices(int(first.shape[0]), k)]
    if hasattr(picked, "detach"):  # torch: project on the device, move 3 small frames
        import torch

        factors = torch.as_tensor(SD_LATENT_RGB, device=picked.device, dtype=torch.float32)
        rgb = torch.einsum("fchw,cr->fhwr", picked.detach().float(), factors)
        arr = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255.0).add(0.5).to(torch.uint8).cpu().numpy()
    else:
        arr = latents_to_rgb(np.asarray(picked))
    data = strip(arr)
    return data, int(arr.shape[2]) * int(arr.shape[0]), int(arr.shape[1])


class LatentPreviewer:
    """At most one preview per `every_s`, handed to `publish(step, total, jpeg, width, height)`."""

    def __init__(self, publish: Callable[[int, int, bytes, int, int], None], *, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publish, self.every_s, self.clock = publish, every_s, clock
        self.last: float | None = None
        self.sent = 0
        self.spent_s = 0.0

    def __call__(self, step: int, total: int, latents: Any) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        t0 = time.perf_counter()
        try:
            data, width, height = preview_jpeg(latents)
            self.publish(step, total, data, width, height)
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a preview is never worth a render
            log.warning("preview at step %d skipped: %s", step, exc)
        self.spent_s += time.perf_counter() - t0


def previewer_for(ctx: Any, job: Any) -> LatentPreviewer | None:
    """The job's previewer, publishing on its channel (and as its latest preview), or None when the job asked
    for none or this worker makes none (SVDQ_PREVIEW_EVERY_S=0)."""
    import base64

    from models.events import PreviewEvent

    every = ctx.settings.preview_every_s
    if not job.preview or every <= 0:
        return None

    def publish(step: int, total: int, data: bytes, width: int, height: int) -> None:
        ctx.signals.publish_preview(job.id, PreviewEvent(step=step, total=total, width=width, height=height,
                                                         image=base64.b64encode(data).decode()))

    return LatentPreviewer(publish, every_s=every)
