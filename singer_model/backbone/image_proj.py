"""ImageProj: a face identity embedding (512-d) -> ``tokens`` context tokens (Hallo's ImageProjModel layout)."""

from __future__ import annotations

import torch
from torch import nn


class ImageProj(nn.Module):
    def __init__(self, embed_dim: int = 512, token_dim: int = 768, tokens: int = 4) -> None:
        super().__init__()
        self.tokens = tokens
        self.token_dim = token_dim
        self.proj = nn.Linear(embed_dim, tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """``[B, embed_dim]`` (or ``[B, 1, embed_dim]``) -> ``[B, tokens, token_dim]``."""
        out = self.proj(embeds).reshape(-1, self.tokens, self.token_dim)
        return self.norm(out)
