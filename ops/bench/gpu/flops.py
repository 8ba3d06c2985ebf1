"""The issue's FLOP arithmetic: the constants (TFLOP of one UNet pass and one VAE decode at the reference size,
the device's peak rate) and what follows from them, a video's TFLOP and its compute floor in seconds. Plain
numbers, no torch."""

from __future__ import annotations

# The arithmetic: one batch-1 UNet pass over 25 frames at 1024x576 is ~80 TFLOP, the temporal VAE decode
# of 25 frames at 1024x576 is ~174 TFLOP; both scale linearly with frames and with pixels. Classifier-free
# guidance doubles the UNet's batch. A meta-device FLOP count of the published configs gives 79.9 and 173.6.
UNET_TFLOP_PER_PASS = 80.0
VAE_DECODE_TFLOP = 174.0
REF_FRAMES = 25
REF_PIXELS = 1024 * 576
PEAK_TFLOPS = 990.0  # H100 SXM, dense fp16 tensor cores


def video_tflop(frames: int, height: int, width: int, steps: int, *, cfg: bool = True,
                unet_tflop_per_pass: float = UNET_TFLOP_PER_PASS, vae_decode_tflop: float = VAE_DECODE_TFLOP) -> float:
    """TFLOP of one video: UNet passes (x2 batch for classifier-free guidance) x steps, plus the VAE decode."""
    scale = (frames / REF_FRAMES) * (height * width / REF_PIXELS)
    return scale * (unet_tflop_per_pass * steps * (2 if cfg else 1) + vae_decode_tflop)


def floor_seconds(tflop: float, peak_tflops: float = PEAK_TFLOPS) -> float:
    """The compute floor: seconds at the device's peak rate."""
    return tflop / peak_tflops
