"""Multi-scale Spectral Module (MSM), paper Eq. 1-4.

Given the audio tokens ``A`` ``[B, F, N, D]`` (AudioProj output) and the noisy latent ``z_t`` ``[B, C, F, H, W]``:

1. ``w_z = w * z_t`` with one trainable ``w`` ``[C, H0, W0]`` (the latent's size; shared by every sample
   and frame);
2. ``w_z`` is split into 4 equal chunks along dim 3 of ``[B, C, F, H, W]`` (the release's axis) and each
   chunk is summed over its positions -> ``[4, B, C, F]``;
3. per chunk k and frame, the two-layer FC ``sigmoid(W2 relu(W1 v))`` maps the C pooled values to one gate;
   the gates are reduced over frames (``MSMConfig.frame_reduction``, times ``band_scale``) -> ``a[k, B]``;
4. ``A`` is viewed as ``[B, D, N, F]`` (tokens x frames plane per channel), Haar-transformed into LL, LH,
   HL, HH, band k is multiplied by ``a[k]``, and the inverse DWT gives the refined tokens (same shape).

This is the computation of the release's ``MultiSpectralAttentionLayer`` with its buffer
``dct_layer.weight`` ``[bs, C, 14, H0, W0]`` replaced by ``w = weight.sum(dim=(0, 2))``: the release's
``einsum('b c f w h, d c e w h -> b c f w h')`` sums the buffer over its batch and frame axes, so this
``w`` gives bit-for-bit the same ``w_z`` for any batch size and frame count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from singer_model.config import MSMConfig
from singer_model.wavelets import weighted_band_filter


class MultiScaleSpectralModule(nn.Module):
    """MSM: re-weights the Haar sub-bands of the audio tokens with gates computed from ``w * z_t``."""

    def __init__(self, cfg: MSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, s = cfg.latent_channels, cfg.latent_size
        # std 1/sqrt(positions per chunk): each pooled chunk sum starts at unit scale (release: N(0,1) summed
        # over bs*14 copies, which saturates the sigmoid).
        self.w = nn.Parameter(torch.randn(c, s, s) / math.sqrt(max(1, s * s // 4)))
        self.fc = nn.Sequential(
            nn.Linear(c, cfg.fc_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(cfg.fc_hidden, 1, bias=False),
            nn.Sigmoid(),
        )
        if cfg.identity_init:
            nn.init.zeros_(self.fc[2].weight)

    def weight_for(self, height: int, width: int) -> torch.Tensor:
        """``w`` at a latent size; bilinear resize plus area rescale when it differs from the trained size."""
        s = self.cfg.latent_size
        if (height, width) == (s, s):
            return self.w
        resized = F.interpolate(self.w[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return resized * (s * s) / (height * width)

    def band_weights(self, z_t: torch.Tensor) -> torch.Tensor:
        """Per-sample sub-band weights ``[4, B]`` (Eq. 2-3)."""
        if z_t.ndim != 5:
            raise ValueError(f"z_t must be [B, C, F, H, W], got {tuple(z_t.shape)}")
        _, c, _, h, w = z_t.shape
        if c != self.cfg.latent_channels or h < 4:
            raise ValueError(f"z_t {tuple(z_t.shape)} does not fit MSM (C={self.cfg.latent_channels}, H>=4)")
        wz = z_t * self.weight_for(h, w).to(z_t.dtype)[:, None]
        pooled = torch.stack([chunk.sum(dim=(3, 4)) for chunk in torch.tensor_split(wz, 4, dim=3)], 0)
        gates = self.fc(pooled.transpose(2, 3)).squeeze(-1)  # [4, B, F]
        gates = gates.mean(-1) if self.cfg.frame_reduction == "mean" else gates.sum(-1)
        return gates * self.cfg.band_scale

    def forward(self, audio_tokens: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """``audio_tokens`` ``[B, F, N, D]``, ``z_t`` ``[B, C, F, H, W]`` -> refined tokens ``[B, F, N, D]``."""
        if audio_tokens.ndim != 4:
            raise ValueError(f"audio tokens must be [B, F, N, D], got {tuple(audio_tokens.shape)}")
        a = self.band_weights(z_t).to(audio_tokens.dtype)  # [4, B]
        plane = audio_tokens.permute(0, 3, 2, 1)  # [B, D, N, F]
        out = weighted_band_filter(plane, a[:, :, None, None, None])
        return out.permute(0, 3, 2, 1)
