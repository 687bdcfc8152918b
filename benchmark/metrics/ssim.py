"""SSIM between generated and ground-truth frames (full-reference, higher is better).

Convention (protocol ``shv-v1``), identical to scikit-image's
``structural_similarity(gt, gen, channel_axis=-1, data_range=255)`` with its defaults:

* RGB uint8 frames as float64, ``data_range = 255``, ``K1 = 0.01``, ``K2 = 0.03``;
* uniform 7x7 window (``gaussian_weights=False``), sample covariance (``N / (N - 1)``, N = 49);
* the SSIM map is cropped by 3 pixels on every side (the window's radius) before averaging, so the
  border handling of the box filter never matters;
* per frame: mean over the cropped map of each channel, then over the 3 channels;
* per clip: mean over frames; dataset: mean over clips.

The implementation filters whole frames (all three channels at once) with OpenCV's box filter in
float64 instead of calling scikit-image per frame and channel; ``tests/benchmark/test_ssim_psnr.py``
checks it against scikit-image itself on real frames within 1e-4.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from benchmark.metrics.base import Clip, MetricInputError, PerClipMeanMetric
from benchmark.protocol import Protocol, as_protocol

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03


def _check_pair(gen: np.ndarray, gt: np.ndarray) -> None:
    if gen.shape != gt.shape:
        raise MetricInputError(f"SSIM/PSNR need equal shapes, got {gen.shape} and {gt.shape}; align first")
    if gen.dtype != np.uint8 or gt.dtype != np.uint8:
        raise MetricInputError(f"frames must be uint8, got {gen.dtype} and {gt.dtype}")
    if gen.ndim != 4 or gen.shape[-1] != 3:
        raise MetricInputError(f"frames must be (T, H, W, 3), got {gen.shape}")
    if min(gen.shape[1:3]) < WIN_SIZE:
        raise MetricInputError(f"frames of {gen.shape[1]}x{gen.shape[2]} are smaller than the 7x7 SSIM window")


def _box(x: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.boxFilter(x, cv2.CV_64F, (WIN_SIZE, WIN_SIZE), normalize=True, borderType=cv2.BORDER_REFLECT)


def ssim_frames(generated: np.ndarray, ground_truth: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-frame SSIM of two ``(T, H, W, 3)`` uint8 arrays of equal shape; returns ``(T,)`` float64."""
    _check_pair(generated, ground_truth)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    cov_norm = WIN_SIZE**2 / (WIN_SIZE**2 - 1)
    pad = (WIN_SIZE - 1) // 2
    out = np.empty(generated.shape[0], dtype=np.float64)
    for t in range(generated.shape[0]):
        x = ground_truth[t].astype(np.float64)
        y = generated[t].astype(np.float64)
        ux, uy = _box(x), _box(y)
        vx = cov_norm * (_box(x * x) - ux * ux)
        vy = cov_norm * (_box(y * y) - uy * uy)
        vxy = cov_norm * (_box(x * y) - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        s = s[pad:-pad, pad:-pad]
        out[t] = float(np.mean([s[..., c].mean() for c in range(s.shape[-1])]))
    return out


def ssim_clip(generated: np.ndarray, ground_truth: np.ndarray, data_range: float = 255.0) -> float:
    """Mean over frames of :func:`ssim_frames`."""
    return float(ssim_frames(generated, ground_truth, data_range).mean())


class SSIM(PerClipMeanMetric):
    """Streaming SSIM: per-clip mean over frames, dataset mean over clips."""

    name: ClassVar[str] = "ssim"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, protocol: Protocol | str | None = None, data_range: float | None = None) -> None:
        self.data_range = float(
            data_range if data_range is not None else as_protocol(protocol).data_range
        )
        self.max_length_mismatch = int(as_protocol(protocol).max_length_mismatch)
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return ssim_clip(generated.frames, ground_truth.frames, self.data_range)
