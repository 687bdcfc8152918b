"""AudioProj: windowed wav2vec2 features ``[B, F, window, layers, dim]`` -> ``[B, F, tokens, token_dim]``.

Three linear layers (ReLU after the first two) and a LayerNorm, Hallo's AudioProjModel layout
(``proj1`` [512, 5*12*768], ``proj2`` [512, 512], ``proj3`` [32*768, 512], ``norm`` [768]).
"""

from __future__ import annotations

import torch
from torch import nn


class AudioProj(nn.Module):
    def __init__(
        self,
        window: int = 5,
        layers: int = 12,
        feature_dim: int = 768,
        intermediate_dim: int = 512,
        token_dim: int = 768,
        tokens: int = 32,
    ) -> None:
        super().__init__()
        self.in_dim = window * layers * feature_dim
        self.tokens = tokens
        self.token_dim = token_dim
        self.proj1 = nn.Linear(self.in_dim, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 5:
            raise ValueError(f"audio features must be [B, F, window, layers, dim], got {tuple(features.shape)}")
        b, f = features.shape[:2]
        x = features.reshape(b * f, self.in_dim)
        x = torch.relu(self.proj1(x))
        x = torch.relu(self.proj2(x))
        x = self.proj3(x).reshape(b * f, self.tokens, self.token_dim)
        return self.norm(x).reshape(b, f, self.tokens, self.token_dim)
