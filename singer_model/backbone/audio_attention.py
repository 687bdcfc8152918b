"""Hallo's hierarchical audio attention module (``audio_modules.N``).

GroupNorm(C) -> 1x1 proj_in to ``inner`` -> block: self-attention; three cross-attentions to the frame's
audio tokens (``attn2_0/1/2``), each multiplied by the full / face / lip mask at this resolution and passed
through a zero-initialised 1x1 conv (``zero_conv_full/face/lip``), summed (optionally scaled by
``motion_scale``) into the residual; GEGLU feed-forward -> 1x1 proj_out back to C, + residual.
The block works on tokens ``[(B F), h*w, inner]``, where the 1x1 convs are linear maps of their weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from singer_model.backbone.blocks import frames_to_tokens, tokens_to_frames


def _zero_conv(dim: int) -> nn.Conv2d:
    conv = nn.Conv2d(dim, dim, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class AudioTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, audio_dim: int) -> None:
        super().__init__()
        # registration order = the published state-dict order
        self.zero_conv_full = _zero_conv(dim)
        self.zero_conv_face = _zero_conv(dim)
        self.zero_conv_lip = _zero_conv(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2_0 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads,
                                 bias=False)
        self.attn2_1 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads,
                                 bias=False)
        self.attn2_2 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads,
                                 bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        audio: torch.Tensor,
        masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        motion_scale: tuple[float, float, float] | None,
    ) -> torch.Tensor:
        """``x`` [(B F), h*w, inner]; ``audio`` [(B F), N, D]; masks three [(B F), h*w]."""
        x = self.attn1(self.norm1(x)) + x
        n = self.norm2(x)
        scales = motion_scale if motion_scale is not None else (1.0, 1.0, 1.0)
        for attn, conv, mask, scale in zip(
            (self.attn2_0, self.attn2_1, self.attn2_2),
            (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip),
            masks,
            scales,
            strict=True,
        ):
            y = attn(n, encoder_hidden_states=audio) * mask[:, :, None].to(n.dtype)
            x = x + scale * F.linear(y, conv.weight.flatten(1), conv.bias)
        return self.ff(self.norm3(x)) + x


class AudioTransformer3D(nn.Module):
    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([AudioTransformerBlock(inner, heads, audio_dim)])
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(
        self,
        hidden: torch.Tensor,
        audio: torch.Tensor,
        masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        motion_scale: tuple[float, float, float] | None = None,
    ) -> torch.Tensor:
        """``hidden`` [(B F), C, h, w]; ``audio`` [(B F), N, D]; masks three [(B F), h*w] at this resolution."""
        x = frames_to_tokens(self.proj_in(self.norm(hidden)))
        for block in self.transformer_blocks:
            x = block(x, audio, masks, motion_scale)
        return tokens_to_frames(hidden, x, self.proj_out)
