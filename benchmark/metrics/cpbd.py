"""CPBD sharpness (Narvekar & Karam 2011), no-reference: scored on the generated frames only.

This is the exact algorithm of the ``cpbd`` 1.0.7 package (the implementation talking-head papers
use), vectorised with NumPy/OpenCV. ``tests/benchmark/test_cpbd.py`` runs the package itself on real
face-video frames and blurred copies and checks agreement within 0.005 (measured: identical to
~1e-15 on every tested frame); ``perf/metrics_speed.py`` measures the speed-up.

Per frame (grey image ``I``, float64 in 0..255):

1. Grey conversion: ITU-R 601-2 luma with Pillow's integer rounding
   (``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``), i.e. what ``cpbd``'s own command line gets
   from ``imread(path, mode='L')``.
2. Edge blocks: scikit-image's Canny with its defaults (sigma 1, Gaussian with ``mode='constant'`` and
   bleed-over correction, absolute hysteresis thresholds 0.1 / 0.2, bilinear non-maximum suppression,
   8-connected hysteresis). It is reimplemented here (vectorised, float64, same operations in the same
   order) because scikit-image's version alone costs more than our whole frame budget. A 64x64 block
   (only whole blocks; the right/bottom remainder is ignored) is an edge block when more than 0.002 of
   its pixels are Canny edges.
3. Edge pixels for widths: the package's Octave-style Sobel detector on the horizontal gradient
   (normalised ``[1 2 1]^T [1 0 -1] / 8`` kernel, squared strength thresholded at
   ``2 sqrt(mean(strength^2))``, then thinned to local maxima along rows or columns).
4. Marziliano widths, only at edge pixels whose gradient angle (``np.gradient``, quantised to 45
   degrees) is 0 or 180: the distance between the intensity extrema on either side of the pixel along
   its row, each side capped at 101 pixels. Computed for all pixels at once from run lengths of
   monotone steps instead of a per-pixel search.
5. Per edge block: contrast ``int(max - min)``, just-noticeable width 5 if contrast <= 50 else 3,
   ``P_blur = 1 - exp(-|w / w_JNB|^3.6)``.
6. CPBD = share of all counted edges whose ``round(100 P_blur) <= 63`` (the package's histogram sum,
   i.e. ``P_blur`` below about 0.63). A frame without counted edges scores 0, as in the package.

Per clip: mean over frames (every ``frame_step``-th frame; ``shv-v1`` uses every frame). In an
evaluation the generated clip is first aligned to the ground truth (common frames, resized to the
ground truth's size), so every method is scored at the same resolution; ``CPBD(also_ground_truth=True)``
also reports the ground truth's CPBD in ``extras`` as a reference point.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from types import ModuleType
from typing import ClassVar

import numpy as np

from benchmark.metrics.base import Clip, MetricInputError, MetricResult, PerClipMeanMetric, align
from benchmark.protocol import Protocol, as_protocol

log = logging.getLogger(__name__)

THRESHOLD = 0.002  # share of Canny pixels that makes a block an edge block
BETA = 3.6
BLOCK = 64
WIDTH_JNB_LOW_CONTRAST = 5.0  # contrast <= 50
WIDTH_JNB_HIGH_CONTRAST = 3.0
CONTRAST_SPLIT = 50
MAX_MARGIN = 100  # the package searches at most 101 steps on each side
HIST_CUTOFF = 63  # sum of the P_blur histogram's first 64 bins (0..63 percent)
CANNY_LOW = float(np.float32(0.1))  # scikit-image passes the low threshold to Cython as C float
CANNY_HIGH = 0.2


# --------------------------------------------------------------------------------------- grey


def rgb_to_grey(frames: np.ndarray) -> np.ndarray:
    """Pillow's ``convert('L')`` on ``(..., 3)`` uint8 RGB: ITU-R 601-2 luma, integer-rounded."""
    f = frames.astype(np.uint32)
    y = (f[..., 0] * 19595 + f[..., 1] * 38470 + f[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)


# -------------------------------------------------------------------------------------- Canny


@lru_cache(maxsize=1)
def _numba_kernels() -> ModuleType | None:
    """The compiled kernels, or None when numba is not importable (then NumPy paths are used)."""
    try:
        from benchmark.metrics import _cpbd_numba
    except ImportError as exc:  # numba comes with librosa; without it we stay correct, only slower
        log.warning("numba unavailable (%s); CPBD uses its slower NumPy path", exc)
        return None
    return _cpbd_numba


@lru_cache(maxsize=1)
def _gaussian_kernel(sigma: float = 1.0, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


@lru_cache(maxsize=8)
def _bleed_over(shape: tuple[int, int]) -> np.ndarray:
    """scikit-image's bleed-over correction: Gaussian (zero padding) of an all-ones image, + eps."""
    import scipy.ndimage as ndi

    out = ndi.gaussian_filter(np.ones(shape), 1.0, mode="constant", cval=0.0, truncate=4.0)
    out += np.finfo(np.float64).eps
    out.flags.writeable = False
    return out


def _canny_gradients_numpy(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed Sobel gradients (axis 0, axis 1) and magnitude, with scipy.ndimage (reference path)."""
    import scipy.ndimage as ndi

    smoothed = ndi.gaussian_filter(img, 1.0, mode="constant", cval=0.0, truncate=4.0)
    smoothed /= _bleed_over(img.shape)
    jsob = ndi.sobel(smoothed, axis=1)
    isob = ndi.sobel(smoothed, axis=0)
    mag = isob * isob
    mag += jsob * jsob
    np.sqrt(mag, out=mag)
    return isob, jsob, mag


def _nms_numpy(isob: np.ndarray, jsob: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """Vectorised bilinear non-maximum suppression + low threshold; True where a pixel survives."""
    h, w = mag.shape
    c = (slice(1, -1), slice(1, -1))
    m, i_c, j_c = mag[c], isob[c], jsob[c]

    def nb(di: int, dj: int) -> np.ndarray:
        return mag[1 + di : h - 1 + di, 1 + dj : w - 1 + dj]

    abs_i, abs_j = np.abs(i_c), np.abs(j_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        wgt = np.minimum(abs_i, abs_j) / np.maximum(abs_i, abs_j)
    cond1 = (i_c > 0) == (j_c > 0)  # both gradients positive or both non-positive
    a = cond1 & (abs_i > abs_j)
    b = cond1 & ~(abs_i > abs_j)
    cc = ~cond1 & (abs_i < abs_j)
    d = ~cond1 & ~(abs_i < abs_j)
    n11 = np.select([a, b, cc, d], [nb(1, 0), nb(0, 1), nb(0, 1), nb(-1, 0)])
    n12 = np.select([a | b, cc | d], [nb(1, 1), nb(-1, 1)])
    n21 = np.select([a, b, cc, d], [nb(-1, 0), nb(0, -1), nb(0, -1), nb(1, 0)])
    n22 = np.select([a | b, cc | d], [nb(-1, -1), nb(1, -1)])
    keep = np.zeros((h, w), dtype=bool)
    keep[c] = (
        (m >= CANNY_LOW)
        & ((n12 * wgt + n11 * (1.0 - wgt)) <= m)
        & ((n22 * wgt + n21 * (1.0 - wgt)) <= m)
    )
    return keep


def _hysteresis(keep: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """8-connected segments of NMS survivors that contain a pixel with magnitude >= the high threshold."""
    import cv2

    if not keep.any():
        return keep
    count, labels = cv2.connectedComponents(keep.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    good = np.zeros(count, dtype=bool)
    good[labels[keep & (mag >= CANNY_HIGH)]] = True
    good[0] = False
    return good[labels]


def canny_edges(grey: np.ndarray, use_numba: bool | None = None) -> np.ndarray:
    """Boolean edge map equal to ``skimage.feature.canny(grey.astype(float64))`` (default arguments).

    Same float64 operations in the same order as scikit-image/SciPy (so ties in the non-maximum
    suppression break the same way); compiled with numba when available, else vectorised NumPy.
    """
    img = np.ascontiguousarray(grey, dtype=np.float64)
    h, w = img.shape
    if h < 3 or w < 3:
        return np.zeros((h, w), dtype=bool)
    kernels = _numba_kernels() if use_numba is not False else None
    if kernels is not None:
        isob, jsob, mag = kernels.gradients(img, _gaussian_kernel(), _bleed_over((h, w)))
        keep = kernels.nms(isob, jsob, mag, CANNY_LOW)
    else:
        isob, jsob, mag = _canny_gradients_numpy(img)
        keep = _nms_numpy(isob, jsob, mag)
    return _hysteresis(keep, mag)


# -------------------------------------------------------------------------------- Sobel edges


def sobel_edges(img: np.ndarray) -> np.ndarray:
    """The package's Octave-style horizontal-gradient Sobel edges (``cpbd.octave.sobel``)."""
    import cv2

    g = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    strength = g * g
    thresh = 2 * np.sqrt(np.mean(strength))
    strength[strength <= thresh] = 0
    pad = np.pad(strength, 1)  # zero border, as the package's thinning
    x = (strength > pad[1:-1, :-2]) & (strength > pad[1:-1, 2:])
    y = (strength > pad[:-2, 1:-1]) & (strength > pad[2:, 1:-1])
    return x | y


# -------------------------------------------------------------------------- Marziliano widths


def _run_end(cond: np.ndarray) -> np.ndarray:
    """Length of the run of True in each row ending at (and including) each column."""
    idx = np.arange(cond.shape[1])
    last_false = np.maximum.accumulate(np.where(cond, -1, idx), axis=1)
    return idx - last_false


def _run_start(cond: np.ndarray) -> np.ndarray:
    """Length of the run of True in each row starting at (and including) each column."""
    n = cond.shape[1]
    idx = np.arange(n)
    rev = np.where(cond, n, idx)[:, ::-1]
    next_false = np.minimum.accumulate(rev, axis=1)[:, ::-1]
    return next_false - idx


def marziliano_widths(img: np.ndarray, edges: np.ndarray, use_numba: bool | None = None) -> np.ndarray:
    """Edge widths (0 where no width is measured), equal to ``cpbd.compute.marziliano_method``."""
    h, w = img.shape
    widths = np.zeros((h, w), dtype=np.float64)
    if h < 3 or w < 4:
        return widths
    gy, gx = np.gradient(img)
    # the package quantises angles only when some pixel has a non-zero angle
    if not np.any((gx != 0) & ((gy != 0) | (gx < 0))):
        return widths
    inner = np.zeros((h, w), dtype=bool)
    inner[1:-1, 1:-1] = edges[1:-1, 1:-1]
    rows, cols = np.nonzero(inner)
    if rows.size == 0:
        return widths
    gxs, gys = gx[rows, cols], gy[rows, cols]
    with np.errstate(invalid="ignore"):
        angle = np.where(gxs != 0, np.arctan2(gys, gxs) * (180 / np.pi), 0.0)
    q = 45 * np.round(angle / 45)
    is0 = q == 0
    is180 = (q == 180) | (q == -180)
    sel = is0 | is180
    rows, cols, is0 = rows[sel], cols[sel], is0[sel]
    if rows.size == 0:
        return widths

    kernels = _numba_kernels() if use_numba is not False else None
    if kernels is not None:
        widths[rows, cols] = kernels.widths_at(img, rows, cols, is0, MAX_MARGIN)
        return widths
    step = img[:, 1:] - img[:, :-1]  # step[j] = I[j+1] - I[j], j = 0..w-2
    left = np.zeros(rows.size, dtype=np.int64)
    right = np.zeros(rows.size, dtype=np.int64)
    for rising, mask in ((True, is0), (False, ~is0)):
        if not mask.any():
            continue
        cond = step > 0 if rising else step < 0
        r, c = rows[mask], cols[mask]
        run_end, run_start = _run_end(cond), _run_start(cond)
        lc = c - 2  # the left search starts with the step (c-2 -> c-1)
        lv = np.where(lc >= 0, run_end[r, np.maximum(lc, 0)], 0)
        rc = c + 1  # the right search starts with the step (c+1 -> c+2)
        rv = np.where(rc <= w - 2, run_start[r, np.minimum(rc, w - 2)], 0)
        left[mask], right[mask] = lv, rv
    widths[rows, cols] = 2 + np.minimum(left, MAX_MARGIN) + np.minimum(right, MAX_MARGIN)
    return widths


# ------------------------------------------------------------------------------------- CPBD


def cpbd_grey(grey: np.ndarray, use_numba: bool | None = None) -> float:
    """CPBD of one grey image (2-D, values 0..255); equal to ``cpbd.compute(grey.astype(float64))``."""
    if grey.ndim != 2:
        raise MetricInputError(f"cpbd_grey needs a 2-D grey image, got shape {grey.shape}")
    img = np.ascontiguousarray(grey, dtype=np.float64)
    h, w = img.shape
    nby, nbx = h // BLOCK, w // BLOCK
    if nby == 0 or nbx == 0:
        return 0.0
    canny = canny_edges(img, use_numba)
    widths = marziliano_widths(img, sobel_edges(img), use_numba)

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: nby * BLOCK, : nbx * BLOCK].reshape(nby, BLOCK, nbx, BLOCK).swapaxes(1, 2)

    n_canny = blocks(canny).sum(axis=(2, 3))
    edge_block = n_canny > BLOCK * BLOCK * THRESHOLD
    bimg = blocks(img)
    contrast = (bimg.max(axis=(2, 3)) - bimg.min(axis=(2, 3))).astype(np.int64)
    jnb = np.where(contrast <= CONTRAST_SPLIT, WIDTH_JNB_LOW_CONTRAST, WIDTH_JNB_HIGH_CONTRAST)
    bw = blocks(widths)
    sel = (bw != 0) & edge_block[:, :, None, None]
    by, bx, _, _ = np.nonzero(sel)
    if by.size == 0:
        return 0.0
    wvals = bw[sel]
    p_blur = 1 - np.exp(-np.abs(wvals / jnb[by, bx]) ** BETA)
    buckets = np.rint(p_blur * 100)
    return float(np.count_nonzero(buckets <= HIST_CUTOFF) / wvals.size)


def cpbd_frames(frames: np.ndarray, frame_step: int = 1) -> np.ndarray:
    """Per-frame CPBD of ``(T, H, W, 3)`` uint8 RGB frames (every ``frame_step``-th frame)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MetricInputError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    return np.array([cpbd_grey(rgb_to_grey(f)) for f in frames[::frame_step]], dtype=np.float64)


def cpbd_clip(frames: np.ndarray, frame_step: int = 1) -> float:
    """Mean over frames of :func:`cpbd_frames`."""
    return float(cpbd_frames(frames, frame_step).mean())


class CPBD(PerClipMeanMetric):
    """Streaming CPBD of the generated clips (no reference needed; the ground truth only sets the
    frames and size compared, see the module docstring)."""

    name: ClassVar[str] = "cpbd"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        protocol: Protocol | str | None = None,
        frame_step: int | None = None,
        also_ground_truth: bool = False,
    ) -> None:
        self.frame_step = int(
            frame_step if frame_step is not None else as_protocol(protocol).cpbd_frame_step
        )
        self.also_ground_truth = also_ground_truth
        self.max_length_mismatch = int(as_protocol(protocol).max_length_mismatch)
        super().__init__()
        self.ground_truth_values: dict[str, float]
        self.add_state("ground_truth_values", {}, "union")

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return cpbd_clip(generated.frames, self.frame_step)

    def update(self, generated: Clip, ground_truth: Clip | None = None) -> float:
        """Score ``generated``; with a ground truth, on the aligned frames (common frames, GT size)."""
        if ground_truth is not None:
            generated, ground_truth = align(generated, ground_truth, self.max_length_mismatch)
        key = (ground_truth.clip_id if ground_truth is not None else generated.clip_id) or (
            f"clip{len(self.per_clip):06d}"
        )
        if key in self.per_clip:
            raise ValueError(f"{self.name}: clip id {key!r} was already scored")
        value = cpbd_clip(generated.frames, self.frame_step)
        self.per_clip[key] = value
        if self.also_ground_truth and ground_truth is not None:
            self.ground_truth_values[key] = cpbd_clip(ground_truth.frames, self.frame_step)
        return value

    def compute(self) -> MetricResult:
        res = super().compute()
        res.extras = {"frame_step": self.frame_step, "reference": "none (generated frames only)"}
        if self.ground_truth_values:
            res.extras["ground_truth"] = float(np.mean(list(self.ground_truth_values.values())))
        return res
