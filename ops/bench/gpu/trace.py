"""Counting on the meta device, with no memory and no compute: the FLOPs of one UNet pass and one VAE decode
(count_tflop, and flop_model, a config's FLOP model in the issue's units), and the peak activation bytes of either
(LiveBytes, trace_activation_bytes), the numbers behind worker/memory.py's footprint."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .configs import ModelConfig
from .flops import REF_FRAMES, REF_PIXELS

# --- FLOPs ------------------------------------------------------------------------------------------------------


def count_tflop(config: ModelConfig, frames: int, height: int, width: int) -> tuple[float, float]:
    """(one batch-1 UNet pass, one VAE decode of all frames) in TFLOP, counted on the meta device: no memory,
    no compute, any size. Counts matmuls, convolutions and attention (torch.utils.flop_counter)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel(**config.unet)
        vae = AutoencoderKLTemporalDecoder(**config.vae)
    # AlphaBlender's mix_factor is made with torch.Tensor([..]), on the CPU whatever the default device
    unet, vae = unet.to("meta"), vae.to("meta")
    scale = 2 ** (len(config.vae["block_out_channels"]) - 1)
    lh, lw = height // scale, width // scale
    with torch.inference_mode(), torch.device("meta"):
        sample = torch.empty(1, frames, config.unet["in_channels"], lh, lw)
        context = torch.empty(1, 1, config.unet["cross_attention_dim"])
        with FlopCounterMode(display=False) as unet_counter:
            unet(sample, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=torch.empty(1, 3))
        latents = torch.empty(frames, config.vae["latent_channels"], lh, lw)
        with FlopCounterMode(display=False) as vae_counter:
            vae.decode(latents, num_frames=frames)
    return unet_counter.get_total_flops() / 1e12, vae_counter.get_total_flops() / 1e12


def flop_model(config: ModelConfig, frames: int, height: int, width: int) -> tuple[float, float]:
    """The config's FLOP model in the issue's units (TFLOP per 25 frames at 1024x576): the issue's constants for
    the published configs, a meta-device count for the tiny ones."""
    if config.unet_tflop_per_pass is not None and config.vae_decode_tflop is not None:
        return config.unet_tflop_per_pass, config.vae_decode_tflop
    unet, vae = count_tflop(config, frames, height, width)
    scale = (frames / REF_FRAMES) * (height * width / REF_PIXELS)
    return unet / scale, vae / scale


# --- activation memory, traced on the meta device ----------------------------------------------------------------


class LiveBytes(TorchDispatchMode):  # type: ignore[misc]  # untyped in torch
    """Counts the bytes of every tensor an op makes, from creation until it is freed, and keeps the peak: the
    activation memory of a forward pass with no memory and no compute (on the meta device). Weights that exist
    before the pass are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, list[int]] = {}  # storage -> [bytes, tensors alive on it]

    def _drop(self, key: int) -> None:
        entry = self.storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.storages:
                    self.storages[key][1] += 1
                else:
                    self.storages[key] = [storage.nbytes(), 1]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._drop, key)
        return out


def _fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    # what flash / memory-efficient SDPA keep: the output (and a per-row log-sum-exp), never the score matrix
    torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    return torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)


def trace_activation_bytes(config: ModelConfig, part: str, frames: int, height: int, width: int, *,
                           dtype: torch.dtype = torch.float16, forward_chunking: bool = False) -> int:
    """Peak activation bytes of the UNet (one CFG batch-2 pass over `frames`) or of the VAE decode of `frames`
    frames, with fused attention: the numbers behind worker/memory.py's footprint."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    lh, lw = height // 8, width // 8
    with torch.device("meta"):
        model: Any = (UNetSpatioTemporalConditionModel(**config.unet) if part == "unet"
                      else AutoencoderKLTemporalDecoder(**config.vae))
    model = model.to("meta", dtype)
    if forward_chunking:
        model.enable_forward_chunking()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _fused_attention
    try:
        with torch.inference_mode(), torch.device("meta"):
            if part == "unet":
                sample = torch.empty(2, frames, config.unet["in_channels"], lh, lw, dtype=dtype)
                context = torch.empty(2, 1, config.unet["cross_attention_dim"], dtype=dtype)
                ids = torch.empty(2, 3, dtype=dtype)
                with LiveBytes() as trace:
                    model(sample, torch.tensor(1.0), encoder_hidden_states=context, added_time_ids=ids)
            else:
                latents = torch.empty(frames, config.vae["latent_channels"], lh, lw, dtype=dtype)
                with LiveBytes() as trace:
                    model.decode(latents, num_frames=frames)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    return int(trace.peak)
