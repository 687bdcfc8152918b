"""Frame-wise (inflated) 2D layers and the spatial transformer with reference attention, for [B, C, F, h, w].

Parameter names follow SD-1.5 / Hallo so published weights load directly: ResNet blocks and resamplers are
diffusers' 2D modules applied to every frame; the spatial transformer has SD-1.5's ``norm``, ``proj_in``,
``transformer_blocks.0.{norm1, attn1, norm2, attn2, norm3, ff}``, ``proj_out``.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] -> [(B F), C, h, w]."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def from_frames(x: torch.Tensor, f: int) -> torch.Tensor:
    """[(B F), C, h, w] -> [B, C, F, h, w]."""
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


class ResnetBlock3D(ResnetBlock2D):
    """diffusers ResnetBlock2D on every frame (GroupNorm per frame = Hallo's inflated GroupNorm)."""

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        f = hidden.shape[2]
        if temb is not None:
            temb = temb.repeat_interleave(f, dim=0)
        return from_frames(super().forward(to_frames(hidden), temb), f)


class Downsample3D(Downsample2D):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f = hidden.shape[2]
        return from_frames(super().forward(to_frames(hidden)), f)


class Upsample3D(Upsample2D):
    def forward(self, hidden: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:  # type: ignore[override]
        f = hidden.shape[2]
        return from_frames(super().forward(to_frames(hidden), output_size), f)


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
        n = self.norm1(x)
        kv = n if reference is None else torch.cat([n, reference.to(n.dtype)], dim=1)
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
        context: torch.Tensor,
        reference: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden`` [B, C, F, h, w]; ``context`` [B, T, D]; ``reference`` [B*(1+M), h*w, C] (the reference
        UNet's norm1 output at the same block: index 0 = reference image, 1..M = motion frames).

        Returns the output and the motion-frame features [B, C, M, h, w] (None without a reference).
        """
        b, c, f, h, w = hidden.shape
        x = to_frames(hidden)
        residual = x
        x = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        ctx = context.repeat_interleave(f, dim=0) if context.shape[0] != b * f else context
        ref_tokens = None
        motion = None
        if reference is not None:
            per_sample = reference.reshape(b, -1, h * w, c)
            ref_tokens = per_sample[:, 0].repeat_interleave(f, dim=0)
            m = per_sample.shape[1] - 1
            motion = per_sample[:, 1:].reshape(b, m, h, w, c).permute(0, 4, 1, 2, 3)
        for block in self.transformer_blocks:
            x = block(x, ctx, ref_tokens)
        x = self.proj_out(x.reshape(b * f, h, w, c).permute(0, 3, 1, 2).contiguous())
        return from_frames(x + residual, f), motion
