"""How a loaded pipeline is placed and described: the device a setting names and the label a worker advertises
for it, the weights' revision, the attention in use, channels-last weights, forward chunking, and how an
out-of-memory error is recognised. Each imports torch only when called."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def source_revision(source: str) -> str:
    """A stable name for weights in a local directory: a fingerprint of its files. (Hub weights are named by their
    snapshot's commit: models/weights.py.)"""
    path = Path(source)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        # small files (configs, tiny weights) by content; multi-GB weights by name and size
        digest.update(f.read_bytes() if size <= 64 * 2**20 else str(size).encode())
    return "dir-" + digest.hexdigest()[:16]


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def set_forward_chunking(unet: Any, chunk: int | None) -> None:
    """Chunk (or, with None, stop chunking) every feed-forward layer of the UNet, as diffusers'
    enable_forward_chunking does: spatial blocks over batch x frames (dim 0: 50 pieces at CFG and 25 frames, not
    one per token), temporal blocks over frames (they pin their own dim)."""
    for module in unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(chunk_size=chunk, dim=0)


def set_channels_last(model: Any) -> None:
    """channels_last for the 4-D (Conv2d) weights only: `model.to(memory_format=torch.channels_last)` raises on
    SVD's 5-D temporal Conv3d weights."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


def attention_processors(pipe: Any) -> str:
    """The attention implementations in use, e.g. "AttnProcessor2_0" (fused SDPA, diffusers' default)."""
    names = {type(p).__name__ for m in (pipe.unet, pipe.vae) for p in m.attn_processors.values()}
    return ",".join(sorted(names))


def describe_device(device: str, *, visible: str | None, name: str | None, total_bytes: int | None) -> str:
    """What a worker advertises: `cuda:0 (GPU 3: NVIDIA H100 80GB HBM3, 79.1 GiB)`, the index being the
    physical one that CUDA_VISIBLE_DEVICES pinned; the plain device elsewhere."""
    if not device.startswith("cuda") or name is None:
        return device
    local = int(device.partition(":")[2] or 0)
    pinned = [v.strip() for v in (visible or "").split(",") if v.strip()]
    index = pinned[local] if local < len(pinned) else str(local)
    size = f", {total_bytes / 1024**3:.1f} GiB" if total_bytes else ""
    return f"{device} (GPU {index}: {name}{size})"
