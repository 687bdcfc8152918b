"""The spatial transformer with reference attention, on frames ``[(B F), C, h, w]``.

The denoising UNet carries its activations as contiguous frames ``[(B F), C, h, w]``; its ResNet blocks and
resamplers are diffusers' 2D modules applied to every frame (GroupNorm per frame = Hallo's inflated
GroupNorm). Parameter names follow SD-1.5 / Hallo so published weights load directly: the spatial
transformer has SD-1.5's ``norm``, ``proj_in``, ``transformer_blocks.0.{norm1, attn1, norm2, attn2, norm3,
ff}``, ``proj_out``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn


def tokens_to_frames(residual: torch.Tensor, tokens: torch.Tensor, proj: nn.Conv2d) -> torch.Tensor:
    """``residual + proj(tokens)`` in frames: ``tokens`` [(B F), h*w, C'] through the 1x1 conv ``proj`` as a
    linear map, added to ``residual`` [(B F), C, h, w]. The addition reads the tokens transposed and writes
    contiguous frames (the residual comes first, so its layout is the output's): no separate copy."""
    bf, c, h, w = residual.shape
    y = F.linear(tokens, proj.weight.flatten(1), proj.bias)
    return residual + y.view(bf, h, w, c).permute(0, 3, 1, 2)


def frames_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[(B F), C, h, w] -> contiguous tokens [(B F), h*w, C] (one copy)."""
    bf, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(bf, h * w, c).contiguous()


class SpatialTransformerBlock(nn.Module):
    """Self-attention (extended with the reference image's tokens), cross-attention to identity tokens, FF."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int) -> None:
        super().__init__()
        # registration order = the published state-dict order (attn1 before norm1)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=cross_attention_dim, heads=heads,
                               dim_head=dim // heads, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """``x`` [(B F), h*w, C]; ``context`` [(B F), T, D]; ``reference`` [B, F, h*w, C] (the reference image's
        tokens, usually expanded over frames), appended to every frame's self-attention keys and values."""
        n = self.norm1(x)
        if reference is None:
            kv = n
        else:
            b, f = reference.shape[:2]
            kv = torch.cat([n.view(b, f, *n.shape[1:]), reference], dim=2).flatten(0, 1)
        x = self.attn1(n, encoder_hidden_states=kv) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer3D(nn.Module):
    """Per-frame spatial transformer with reference attention (Hallo's Transformer3DModel, non-audio)."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([SpatialTransformerBlock(channels, heads, cross_attention_dim)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(
        self,
        hidden: torch.Tensor,
        frames: int,
        context: torch.Tensor,
        reference: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden`` [(B F), C, h, w] with ``frames`` = F; ``context`` [(B F), T, D]; ``reference``
        [B*(1+M), h*w, C] (the reference UNet's norm1 output at the same block: index 0 = reference image,
        1..M = motion frames).

        Returns the output [(B F), C, h, w] and the motion-frame features [B, M, C, h, w] (a view; None
        without a reference).
        """
        bf, c, h, w = hidden.shape
        b = bf // frames
        x = frames_to_tokens(self.proj_in(self.norm(hidden)))
        ref_tokens = None
        motion = None
        if reference is not None:
            per_sample = reference.to(x.dtype).reshape(b, -1, h * w, c)
            ref_tokens = per_sample[:, :1].expand(b, frames, h * w, c)
            m = per_sample.shape[1] - 1
            motion = per_sample[:, 1:].reshape(b, m, h, w, c).permute(0, 1, 4, 2, 3)
        for block in self.transformer_blocks:
            x = block(x, context, ref_tokens)
        return tokens_to_frames(hidden, x, self.proj_out), motion
