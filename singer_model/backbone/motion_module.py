"""Temporal motion module, AnimateDiff "Vanilla" (v2) layout, so ``mm_sd_v15_v2.ckpt`` loads unchanged.

``motion_modules.N.temporal_transformer``: GroupNorm -> Linear proj_in -> one TemporalTransformerBlock
(two temporal self-attentions, each preceded by a LayerNorm and adding a sinusoidal position encoding
``pos_encoder.pe`` [1, max_len, C]; then a GEGLU feed-forward) -> Linear proj_out (zero-initialised) + residual.
Attention runs over the frame axis for every spatial position, through scaled_dot_product_attention: the
module takes frames ``[(B F), C, h, w]``, normalises them, and runs proj_in .. proj_out on the temporal token
layout ``[(B h w), F, C]`` (one copy in; the way back is read by the residual addition).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn


class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe[0, pos, 2i] = sin(pos / 10000^(2i/d))``, ``pe[0, pos, 2i+1] = cos(...)``."""

    def __init__(self, dim: int, max_len: int = 32) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the motion module's position table ({self.pe.shape[1]})")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention over frames with the position encoding added to its input."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``hidden_states`` [(B h w), F, C]."""
        return super().forward(self.pos_encoder(hidden_states))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int, n_attention: int = 2) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, max_len) for _ in range(n_attention)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_attention)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [(B h w), F, C]."""
        for attn, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attn(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3D(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden: torch.Tensor, frames: int, skip: int = 0) -> torch.Tensor:
        """``hidden`` [(B F), C, h, w] with ``frames`` = F -> the last F - ``skip`` frames of every sample,
        [(B (F - skip)), C, h, w] (contiguous)."""
        bf, c, h, w = hidden.shape
        b = bf // frames
        x = self.norm(hidden).view(b, frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, frames, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self.proj_out(x).view(b, h, w, frames, c)[:, :, :, skip:].permute(0, 3, 4, 1, 2)
        # residual first: the sum is written in the residual's (frames) layout
        out = hidden.view(b, frames, c, h, w)[:, skip:] + x
        return out.view(b * (frames - skip), c, h, w)


class MotionModule(nn.Module):
    """Frames ``[(B F), C, h, w]`` -> same; optional ``motion_frames`` ``[B, M, C, h, w]`` (any strides) are
    prepended along time as context."""

    def __init__(self, channels: int, heads: int = 8, max_len: int = 32, groups: int = 32) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3D(channels, heads, max_len, groups)
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden: torch.Tensor, frames: int, motion_frames: torch.Tensor | None = None) -> torch.Tensor:
        if motion_frames is None or motion_frames.shape[1] == 0:
            return self.temporal_transformer(hidden, frames)
        b, m = motion_frames.shape[:2]
        per_sample = hidden.view(b, frames, *hidden.shape[1:])
        x = torch.cat([motion_frames.to(hidden.dtype), per_sample], dim=1).flatten(0, 1)
        return self.temporal_transformer(x, frames + m, skip=m)
