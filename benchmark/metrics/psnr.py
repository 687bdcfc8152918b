"""PSNR between generated and ground-truth frames (full-reference, higher is better).

Convention (protocol ``shv-v1``), identical per frame to scikit-image's
``peak_signal_noise_ratio(gt, gen, data_range=255)``:

* per frame: ``MSE`` over all pixels and the 3 RGB channels of the uint8 frames,
  ``PSNR = 10 log10(255^2 / MSE)``;
* identical frames have ``MSE = 0`` and ``PSNR = inf``. Rule: every per-frame value is capped at
  ``protocol.psnr_cap_db`` (100 dB) *before* averaging, so one identical frame cannot make a clip
  infinite. The uncapped clip mean (possibly ``inf``) is available with ``cap_db=None`` and is reported
  in the metric's ``extras["uncapped"]``; ``extras["n_frames_capped"]`` counts frames at or above the cap;
* per clip: mean over frames; dataset: mean over clips.

MSE is computed from exact integer sums of squared differences (int64), vectorised over the clip.

The uint8 wrap-around variant (``psnr_uint8_wrap``, reported beside PSNR only under a protocol with
``psnr_uint8_wrap=True``, i.e. ``singer-paper``): a known bug reproduced on purpose, as clean-fid's
legacy modes do. ``np.mean((gen - gt) ** 2)`` on uint8 arrays never widens: the difference wraps
modulo 256 and so does its square, so the "MSE" is the mean of ``((g - r) mod 256)^2 mod 256`` and can
never exceed 255; PSNR = 10 log10(255^2 / that), capped per frame like PSNR, mean over frames, then
clips. It is at least 24.05 dB for any pair of frames, which squeezes every method into a narrow band.
Measured on the bundled sample's static baselines (crf 18): correct PSNR 16.6-24.2 dB, variant
29.3-31.8 dB; the SINGER paper's eight methods span 28.3-30.7 dB. The variant is never reported as
PSNR.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from benchmark.metrics.base import Clip, MetricResult, PerClipMeanMetric
from benchmark.metrics.ssim import _check_pair
from benchmark.protocol import Protocol, as_protocol

DEFAULT_CAP_DB = 100.0


def mse_frames(generated: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Per-frame mean squared error of two ``(T, H, W, 3)`` uint8 arrays; ``(T,)`` float64."""
    _check_pair(generated, ground_truth)
    n = generated[0].size
    out = np.empty(generated.shape[0], dtype=np.float64)
    for t in range(generated.shape[0]):  # one frame at a time keeps the int32 temporary small
        d = generated[t].astype(np.int32) - ground_truth[t].astype(np.int32)
        out[t] = np.einsum("ijk,ijk->", d, d, dtype=np.int64) / n
    return out


def psnr_frames(
    generated: np.ndarray,
    ground_truth: np.ndarray,
    data_range: float = 255.0,
    cap_db: float | None = DEFAULT_CAP_DB,
) -> np.ndarray:
    """Per-frame PSNR in dB; identical frames give ``inf``, or ``cap_db`` when it is not None."""
    return _decibels(mse_frames(generated, ground_truth), data_range, cap_db)


def _decibels(mse: np.ndarray, data_range: float, cap_db: float | None) -> np.ndarray:
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10((data_range**2) / mse)
    return psnr if cap_db is None else np.minimum(psnr, cap_db)


def wrapped_mse_frames(generated: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """Per-frame mean of uint8 squared differences computed without widening (wrap-around, see the
    module docstring); ``(T,)`` float64, each value in [0, 255]."""
    _check_pair(generated, ground_truth)
    out = np.empty(generated.shape[0], dtype=np.float64)
    for t in range(generated.shape[0]):
        d = np.subtract(generated[t], ground_truth[t], dtype=np.uint8)  # wraps modulo 256
        out[t] = np.multiply(d, d, dtype=np.uint8).mean(dtype=np.float64)  # wraps again
    return out


def psnr_uint8_wrap_frames(
    generated: np.ndarray,
    ground_truth: np.ndarray,
    data_range: float = 255.0,
    cap_db: float | None = DEFAULT_CAP_DB,
) -> np.ndarray:
    """Per-frame PSNR of the uint8 wrap-around variant (never call it PSNR)."""
    return _decibels(wrapped_mse_frames(generated, ground_truth), data_range, cap_db)


def psnr_clip(
    generated: np.ndarray,
    ground_truth: np.ndarray,
    data_range: float = 255.0,
    cap_db: float | None = DEFAULT_CAP_DB,
) -> float:
    """Mean over frames of :func:`psnr_frames` (``inf`` if uncapped and any frame is identical)."""
    return float(psnr_frames(generated, ground_truth, data_range, cap_db).mean())


class PSNR(PerClipMeanMetric):
    """Streaming PSNR with the per-frame cap rule; also tracks the uncapped values."""

    name: ClassVar[str] = "psnr"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self, protocol: Protocol | str | None = None, data_range: float | None = None, cap_db: float | None = None
    ) -> None:
        self.data_range = float(
            data_range if data_range is not None else as_protocol(protocol).data_range
        )
        self.cap_db = float(cap_db if cap_db is not None else as_protocol(protocol).psnr_cap_db)
        self.max_length_mismatch = int(as_protocol(protocol).max_length_mismatch)
        self.with_wrap = bool(as_protocol(protocol).psnr_uint8_wrap)
        super().__init__()
        self.uncapped: dict[str, float]
        self.n_identical: dict[str, int]
        self.wrapped: dict[str, float]
        self.add_state("uncapped", {}, "union")
        self.add_state("n_identical", {}, "union")
        self.add_state("wrapped", {}, "union")  # psnr_uint8_wrap per clip (only when the protocol asks)

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        uncapped = psnr_frames(generated.frames, ground_truth.frames, self.data_range, cap_db=None)
        wrap = None
        if self.with_wrap:
            wrap = float(psnr_uint8_wrap_frames(generated.frames, ground_truth.frames, self.data_range,
                                                self.cap_db).mean())
        self._last = (float(uncapped.mean()), int(np.count_nonzero(uncapped >= self.cap_db)), wrap)
        return float(np.minimum(uncapped, self.cap_db).mean())

    def update(self, generated: Clip, ground_truth: Clip) -> float:
        value = super().update(generated, ground_truth)
        key = next(reversed(self.per_clip))  # the key the base class just added
        self.uncapped[key], self.n_identical[key], wrap = self._last
        if wrap is not None:
            self.wrapped[key] = wrap
        return value

    def results(self) -> list[MetricResult]:
        """``[psnr]``, and ``psnr_uint8_wrap`` (a separate number, never PSNR) when the protocol asks."""
        out = [self.compute()]
        if self.with_wrap:
            vals = {k: self.wrapped[k] for k in self.per_clip if k in self.wrapped}
            finite = [v for v in vals.values() if np.isfinite(v)]
            out.append(MetricResult(
                "psnr_uint8_wrap", float(np.mean(finite)) if finite else None, True, len(vals), vals,
                {"cap_db": self.cap_db, "definition": "mean over frames of 10 log10(255^2 / mean(uint8 "
                 "(g - r)^2 without widening)); a reproduced bug, not PSNR"},
                n_failed=len(vals) - len(finite),
            ))
        return out

    def compute(self) -> MetricResult:
        res = super().compute()
        unc = list(self.uncapped.values())
        res.extras.update({
            "cap_db": self.cap_db,
            "uncapped": float(np.mean(unc)) if unc else None,
            "n_frames_capped": int(sum(self.n_identical.values())),
        })
        return res


__all__ = ["PSNR", "mse_frames", "psnr_clip", "psnr_frames", "psnr_uint8_wrap_frames", "wrapped_mse_frames"]
