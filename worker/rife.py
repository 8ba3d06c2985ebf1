"""RIFE's IFNet (Practical-RIFE v4.6 layout): a coarse-to-fine flow estimator that warps two frames to any
time t in (0, 1) and blends them with a learned mask.

Written here because no maintained PyPI package ships a RIFE- or FILM-class model that imports without
torchvision (ccvfi/cccv import torchvision and OpenCV at package import; spandrel has no interpolation
architecture). The parameter names match the published ``flownet.pkl`` state dicts (after their
DataParallel ``module.`` prefix is dropped), and the block widths and residual depth are read from the
state dict, so the same code loads the real weights and the small random-weight models the tests build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SCALES = (8, 4, 2, 1)  # the downscale each block works at, coarsest first
PAD_MULTIPLE = 32  # block0 works at 1/8 and halves twice more: sizes must divide by 8 * 4


class ResConv(nn.Module):  # type: ignore[misc]
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: Any) -> Any:
        return self.relu(self.conv(x) * self.beta + x)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, True))


class IFBlock(nn.Module):  # type: ignore[misc]
    def __init__(self, in_planes: int, c: int, depth: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2), _conv(c // 2, c))
        self.convblock = nn.Sequential(*(ResConv(c) for _ in range(depth)))
        # 4 flow channels (t->0 and t->1) and 1 mask channel, upsampled x4 back to the block's input size
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Any, flow: Any, scale: int) -> tuple[Any, Any]:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5]


def warp(image: Any, flow: Any) -> Any:
    """Sample `image` at each pixel moved by `flow` (pixels, x then y); borders repeat."""
    n, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    norm = torch.cat((flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)), 1)
    grid = (torch.cat((xs, ys), 1) + norm).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):  # type: ignore[misc]
    def __init__(self, widths: Sequence[int] = (192, 128, 96, 64), depth: int = 8) -> None:
        super().__init__()
        if len(widths) != len(SCALES):
            raise ValueError(f"IFNet has {len(SCALES)} blocks, got {len(widths)} widths")
        self.widths, self.depth = tuple(widths), depth
        # block0 sees both frames and t (7 channels); later ones add the mask and the flow so far (4)
        for i, c in enumerate(widths):
            self.add_module(f"block{i}", IFBlock(7 if i == 0 else 8 + 4, c, depth))

    def forward(self, img0: Any, img1: Any, timestep: Any) -> Any:
        """img0, img1: (B, 3, H, W) in [0, 1], H and W multiples of PAD_MULTIPLE; timestep: (B, 1, H, W)."""
        flow = mask = None
        warped0, warped1 = img0, img1
        for i, scale in enumerate(SCALES):
            block = getattr(self, f"block{i}")
            if flow is None:
                flow, mask = block(torch.cat((img0, img1, timestep), 1), None, scale)
            else:
                d_flow, d_mask = block(torch.cat((warped0, warped1, timestep, mask), 1), flow, scale)
                flow, mask = flow + d_flow, mask + d_mask
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def ifnet_from_state_dict(state: Mapping[str, Any]) -> IFNet:
    """An IFNet shaped like the state dict (block widths, residual depth), with its weights loaded.

    Raises ValueError when the dict is not an IFNet of this layout."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        widths = [int(state[f"block{i}.conv0.1.0.weight"].shape[0]) for i in range(len(SCALES))]
    except (KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"not a RIFE IFNet (v4.6 layout) state dict: missing {exc}") from exc
    depth = len({m.group(1) for k in state if (m := re.match(r"block0\.convblock\.(\d+)\.beta$", k))})
    net = IFNet(widths, depth)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"not a RIFE IFNet (v4.6 layout) state dict: {str(exc)[:300]}") from exc
    return net
