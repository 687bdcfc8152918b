"""FaceLocator: a face-region mask ``[B, C, F, H, W]`` -> a residual ``[B, 320, F, H/8, W/8]`` for conv_in.

Per-frame 3x3 convolutions with SiLU: ``conv_in``, then for each channel step a same-width conv and a
stride-2 conv, and a zero-initialised ``conv_out`` (Hallo's layout, keys ``conv_in``, ``blocks.0..5``,
``conv_out``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FaceLocator(nn.Module):
    def __init__(self, out_channels: int = 320, in_channels: int = 3,
                 block_out_channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        blocks: list[nn.Module] = []
        for cin, cout in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            blocks.append(nn.Conv2d(cin, cin, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, H, W]`` (or ``[B, C, H, W]``, one mask for every frame) -> ``[B, out, F, h, w]``."""
        single = mask.ndim == 4
        if single:
            mask = mask[:, :, None]
        b, c, f, h, w = mask.shape
        x = mask.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        x = self.conv_out(x)
        return x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)
