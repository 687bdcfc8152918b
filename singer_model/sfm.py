"""Self-adaptive Filter Module (SFM), paper Eq. 5-8.

On the denoising UNet's mid-block output ``H_t`` ``[B, C, F, h, w]`` or frames ``[(B F), C, h, w]`` (per frame):
``SFM(H_t) = sigmoid(FC(H_t)) * IDWT(sum_k beta_k * DWT(H_t)_k)`` with trainable per-sub-band, per-channel
weights ``beta`` ``[4, C]``; the result replaces the mid-block output and feeds the decoder.

Release compatibility: its ``hidden_spectral_weighting.weight`` ``[4, 1, C, 4, 4]`` enters only through
``einsum('n b c h w, n m c s t -> n b c h w')``, i.e. through ``weight.sum((1, 3, 4))`` = ``beta``; its
``fc`` (Linear(8, 4) -> ReLU -> Linear(4, 8) -> Sigmoid, no bias) acts on the width axis of ``H_t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from singer_model.config import SFMConfig
from singer_model.wavelets import weighted_band_filter


class SelfAdaptiveFilterModule(nn.Module):
    """SFM over ``channels``-wide mid features."""

    def __init__(self, channels: int, cfg: SFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.band_weight = nn.Parameter(torch.full((4, channels), float(cfg.init_band_weight)))
        self.fc = nn.Sequential(
            nn.Linear(cfg.gate_dim, cfg.gate_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(cfg.gate_hidden, cfg.gate_dim, bias=False),
            nn.Sigmoid(),
        )
        nn.init.zeros_(self.fc[2].weight)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``sigmoid(FC(x))`` over the last axis, resampled to ``gate_dim`` when the width differs."""
        w = x.shape[-1]
        if w == self.cfg.gate_dim:
            return self.fc(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, 1, w)
        g = self.fc(F.interpolate(flat, size=self.cfg.gate_dim, mode="linear", align_corners=False))
        g = F.interpolate(g, size=w, mode="linear", align_corners=False)
        return g.reshape(*lead, w)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` [B, C, F, h, w] or frames [(B F), C, h, w] -> same shape."""
        if hidden.ndim not in (4, 5):
            raise ValueError(f"SFM expects [B, C, F, h, w] or [(B F), C, h, w], got {tuple(hidden.shape)}")
        # [4, 1, C, 1, 1(, 1)]: the band weight per channel, broadcast over the DWT's [4, *lead, h/2, w/2]
        beta = self.band_weight.to(hidden.dtype).view(4, 1, -1, *[1] * (hidden.ndim - 2))
        filtered = weighted_band_filter(hidden, beta)
        return self.gate(hidden) * filtered
