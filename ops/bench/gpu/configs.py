"""The models under test: the published SVD / SVD-XT configs written out (so nothing is downloaded), tiny configs
with the same classes for CPU runs, ModelConfig and model_config to pick one, and building the components and the
real `StableVideoDiffusionPipeline` from a config with random weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .flops import UNET_TFLOP_PER_PASS, VAE_DECODE_TFLOP

# --- published configs ---------------------------------------------------------------------------------------

SVD_UNET: dict[str, Any] = {  # stabilityai/stable-video-diffusion-img2vid{,-xt} unet/config.json
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": (5, 10, 20, 20),
    "num_frames": 14,
}
SVD_VAE: dict[str, Any] = {  # vae/config.json
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
SVD_IMAGE_ENCODER: dict[str, Any] = {  # image_encoder/config.json: OpenCLIP ViT-H/14 vision tower
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
SVD_SCHEDULER: dict[str, Any] = {  # scheduler/scheduler_config.json
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}
SVD_FEATURE_EXTRACTOR: dict[str, Any] = {  # feature_extractor/preprocessor_config.json
    "crop_size": {"height": 224, "width": 224},
    "size": {"shortest_edge": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
}

# --- tiny configs for CPU runs: the same classes and block types, a few thousand times smaller ------------------

TINY_UNET: dict[str, Any] = {
    **SVD_UNET,
    "sample_size": 8,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),  # the UNet's GroupNorms use 32 groups: channels must be multiples of 32
    "addition_time_embed_dim": 32,
    "projection_class_embeddings_input_dim": 96,  # 3 added time ids x addition_time_embed_dim
    "cross_attention_dim": 32,
    "num_attention_heads": (2, 4),
}
TINY_VAE: dict[str, Any] = {**SVD_VAE, "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1,
                            "sample_size": 64}  # four blocks keep SVD's 8x latent scale
TINY_IMAGE_ENCODER: dict[str, Any] = {**SVD_IMAGE_ENCODER, "hidden_size": 32, "intermediate_size": 64,
                                      "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 32,
                                      "projection_dim": 32}  # projection_dim == the UNet's cross_attention_dim


@dataclass(frozen=True)
class ModelConfig:
    name: str
    size: str  # "full" or "tiny"
    frames: int
    unet: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SVD_SCHEDULER))
    feature_extractor: dict[str, Any] = field(default_factory=lambda: dict(SVD_FEATURE_EXTRACTOR))
    # FLOP model in the units (per 25 frames at 1024x576); None: count them on the meta device
    unet_tflop_per_pass: float | None = UNET_TFLOP_PER_PASS
    vae_decode_tflop: float | None = VAE_DECODE_TFLOP


MODELS = {"svd": 14, "svd-xt": 25}


def model_config(name: str, size: str = "full") -> ModelConfig:
    """The published config of `svd` or `svd-xt`, or (size="tiny") a tiny one with the same structure."""
    frames = MODELS[name]
    if size == "full":
        return ModelConfig(name, size, frames, {**SVD_UNET, "num_frames": frames}, dict(SVD_VAE),
                           dict(SVD_IMAGE_ENCODER))
    if size == "tiny":
        return ModelConfig(name, size, frames, {**TINY_UNET, "num_frames": frames}, dict(TINY_VAE),
                           dict(TINY_IMAGE_ENCODER), unet_tflop_per_pass=None, vae_decode_tflop=None)
    raise ValueError(f"unknown size {size!r}")


# --- building ---------------------------------------------------------------------------------------------------


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_components(config: ModelConfig, dtype: torch.dtype, device: str | torch.device) -> dict[str, Any]:
    """The pipeline's five components with random weights, initialized on `device` (fast on a GPU)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**config.unet)
        vae = AutoencoderKLTemporalDecoder(**config.vae)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder))
    # .to(device) as well: a few parameters are made with torch.Tensor([..]), which ignores the default device
    models = {"unet": unet, "vae": vae, "image_encoder": image_encoder}
    for model in models.values():
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return {**models, "scheduler": EulerDiscreteScheduler(**config.scheduler),
            "feature_extractor": CLIPImageProcessor(**config.feature_extractor)}


def build_pipeline(config: ModelConfig, dtype: torch.dtype, device: str | torch.device) -> Any:
    """A real `diffusers.StableVideoDiffusionPipeline` from `config` with random weights, on `device`."""
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline(**build_components(config, dtype, device))
    pipe.set_progress_bar_config(disable=True)
    return pipe
