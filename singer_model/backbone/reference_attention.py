"""Reference attention: capture the reference UNet's self-attention inputs.

Every diffusers ``BasicTransformerBlock`` of the reference UNet gets a forward hook on its ``norm1``; the
hook stores the normalised hidden states ``[B*(1+M), h*w, C]`` under the block's module path (e.g.
``down_blocks.0.attentions.1.transformer_blocks.0``). The denoising UNet's transformer block at the same
path concatenates sample 0 of each group (the reference image) to its self-attention keys/values and
prepends samples 1..M (motion frames) along time in the motion module of the same layer. Matching by path
is equivalent to Hallo's pairing of blocks sorted by width, as both UNets share SD-1.5's block structure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention import BasicTransformerBlock
from torch import nn


def transformer_block_paths(unet: nn.Module) -> list[str]:
    return [name for name, mod in unet.named_modules() if isinstance(mod, BasicTransformerBlock)]


@contextmanager
def capture_reference_features(unet: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    bank: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in unet.named_modules():
        if isinstance(mod, BasicTransformerBlock):
            def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor, key: str = name) -> None:
                bank[key] = out
            handles.append(mod.norm1.register_forward_hook(hook))
    try:
        yield bank
    finally:
        for handle in handles:
            handle.remove()
