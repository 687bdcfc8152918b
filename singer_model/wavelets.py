"""Single-level 2D Haar wavelet transform (paper Eq. 1 and 5) on the last two dimensions.

Filters: L = [1, 1] / sqrt(2), H = [-1, 1] / sqrt(2). For an input ``x[..., 2i + a, 2j + b]`` (a, b in {0, 1})
the four sub-bands are, in this order (the order of the SINGER release's ``DWT_2D``, so a per-band weight
index means the same band there and here):

* ``0`` LL: low-pass along dim -2 and dim -1;
* ``1`` LH: low-pass along dim -2, high-pass along dim -1;
* ``2`` HL: high-pass along dim -2, low-pass along dim -1;
* ``3`` HH: high-pass along both.

The transform is orthonormal, so :func:`iwt2` (its transpose) is its exact inverse. The release uses pywt's
``H = [1, -1] / sqrt(2)``; that flips the sign of LH and HL only, which cancels in every
"weight the bands, then invert" operation SINGER performs, so results are identical.
Odd sizes are handled by :func:`pad_even` / cropping in the callers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INV_SQRT2 = 1.0 / math.sqrt(2.0)
BANDS = ("LL", "LH", "HL", "HH")


def dwt2(x: torch.Tensor) -> torch.Tensor:
    """Haar DWT of the last two dims (both even). Returns ``[4, *x.shape[:-2], H/2, W/2]`` (LL, LH, HL, HH)."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"dwt2 needs even spatial sizes, got {h}x{w}")
    x00 = x[..., 0::2, 0::2]
    x01 = x[..., 0::2, 1::2]
    x10 = x[..., 1::2, 0::2]
    x11 = x[..., 1::2, 1::2]
    # rows (dim -2) first: low = (x0 + x1)/sqrt2, high = (x1 - x0)/sqrt2; then columns the same way.
    ll = (x00 + x01 + x10 + x11) * 0.5
    lh = (x01 - x00 + x11 - x10) * 0.5
    hl = (x10 + x11 - x00 - x01) * 0.5
    hh = (x11 - x10 - x01 + x00) * 0.5
    return torch.stack((ll, lh, hl, hh), 0)


def iwt2(bands: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dwt2`: ``[4, ..., h, w] -> [..., 2h, 2w]``."""
    if bands.shape[0] != 4:
        raise ValueError(f"iwt2 expects 4 sub-bands on dim 0, got {bands.shape[0]}")
    ll, lh, hl, hh = bands.unbind(0)
    x00 = (ll - lh - hl + hh) * 0.5
    x01 = (ll + lh - hl - hh) * 0.5
    x10 = (ll - lh + hl - hh) * 0.5
    x11 = (ll + lh + hl + hh) * 0.5
    top = torch.stack((x00, x01), dim=-1).flatten(-2)  # interleave columns
    bottom = torch.stack((x10, x11), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # interleave rows


def analysis_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 1D single-level Haar analysis matrix ``[n, n]`` (first n/2 rows low-pass, last n/2 high-pass).

    Independent reference for tests: ``dwt2`` equals ``A_h x A_w^T`` arranged in sub-bands.
    """
    if n % 2:
        raise ValueError("n must be even")
    a = torch.zeros(n, n, dtype=dtype)
    for i in range(n // 2):
        a[i, 2 * i] = INV_SQRT2
        a[i, 2 * i + 1] = INV_SQRT2
        a[n // 2 + i, 2 * i] = -INV_SQRT2
        a[n // 2 + i, 2 * i + 1] = INV_SQRT2
    return a


def pad_even(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the last two dims to even sizes; returns the padded tensor and the original (h, w)."""
    h, w = x.shape[-2:]
    ph, pw = h % 2, w % 2
    if ph or pw:
        lead = x.shape[:-2]
        flat = x.reshape(-1, 1, h, w)
        flat = F.pad(flat, (0, pw, 0, ph), mode="replicate")
        x = flat.reshape(*lead, h + ph, w + pw)
    return x, (h, w)


def weighted_band_filter(x: torch.Tensor, band_weights: torch.Tensor) -> torch.Tensor:
    """``IWT(sum_k band_weights[k] * DWT(x)_k)`` with odd sizes handled by replicate padding + crop.

    ``band_weights`` has shape ``[4, ...]`` broadcastable against ``[4, *x.shape[:-2], h/2, w/2]``.
    """
    xp, (h, w) = pad_even(x)
    out = iwt2(dwt2(xp) * band_weights)
    return out[..., :h, :w]
