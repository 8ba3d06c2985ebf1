"""The `tiny` model: SVD's real diffusers classes with tiny configs and random weights from a fixed
seed, saved once to a cache directory and then loaded with `from_pretrained` like real weights."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path
from typing import Any

TINY_VERSION = "tiny-v1"


def _build(dest: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    # the UNet's GroupNorms use 32 groups, so 32 channels is the floor; four VAE blocks give SVD's
    # 8x latent scale, which keeps the UNet's token count (and its CPU time) small
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, num_frames=14,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        num_attention_heads=(2, 4), transformer_layers_per_block=1,
        addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
    )
    torch.manual_seed(1)
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32),
    )
    torch.manual_seed(2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, image_size=224, patch_size=32,
    ))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipe: Any = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=scheduler, feature_extractor=feature_extractor)
    pipe.save_pretrained(str(dest), safe_serialization=True)


def ensure_tiny(cache_dir: Path) -> Path:
    """The tiny model's directory, built on first use. Safe when several workers start at once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / TINY_VERSION
    if (dest / "model_index.json").is_file():
        return dest
    with open(cache_dir / f".{TINY_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "model_index.json").is_file():
            return dest
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{TINY_VERSION}-"))
        try:
            _build(tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
