"""Compiled inner loops of :mod:`benchmark.metrics.cpbd` (numba, cached on disk after the first call).

Each kernel performs the same float64 operations in the same order as the reference it replaces
(SciPy's ``correlate1d`` for the Gaussian and Sobel filters, scikit-image's Cython non-maximum
suppression, the ``cpbd`` package's Marziliano width search), so results are bit-identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _gauss_rows(xp: np.ndarray, k: np.ndarray, h: int) -> np.ndarray:
    """Correlate along axis 0; ``xp`` is the image zero-padded by the kernel radius on axis 0.

    Per pixel the order of operations is SciPy's for a symmetric kernel:
    ``acc = x[0] * k[0]``, then ``acc += (x[-j] + x[+j]) * k[j]`` for j = r .. 1.
    """
    r = k.shape[0] // 2
    w = xp.shape[1]
    out = np.empty((h, w))
    for i in range(h):
        c = i + r
        kc = k[r]
        for j in range(w):
            out[i, j] = xp[c, j] * kc
        for jj in range(-r, 0):
            kj = k[r + jj]
            for j in range(w):
                out[i, j] += (xp[c + jj, j] + xp[c - jj, j]) * kj
    return out


@njit(cache=True, nogil=True)
def gradients(img: np.ndarray, k: np.ndarray, bleed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian smoothing (zero padding, bleed-over corrected), ndi.sobel on both axes, magnitude."""
    h, w = img.shape
    r = k.shape[0] // 2
    xp = np.zeros((h + 2 * r, w))
    xp[r : r + h] = img
    g0 = _gauss_rows(xp, k, h)  # axis 0
    tp = np.zeros((w + 2 * r, h))
    tp[r : r + w] = g0.T
    sm = _gauss_rows(tp, k, w).T.copy()  # axis 1, through the transpose
    for i in range(h):
        for j in range(w):
            sm[i, j] /= bleed[i, j]
    # reflect-padded copy (half-sample symmetric, one pixel)
    sp = np.empty((h + 2, w + 2))
    sp[1 : h + 1, 1 : w + 1] = sm
    sp[0, 1 : w + 1] = sm[0]
    sp[h + 1, 1 : w + 1] = sm[h - 1]
    sp[:, 0] = sp[:, 1]
    sp[:, w + 1] = sp[:, w]
    # derivative [-1, 0, 1] along one axis, on the padded grid
    dj = np.empty((h + 2, w))
    di = np.empty((h, w + 2))
    for i in range(h + 2):
        for j in range(w):
            dj[i, j] = sp[i, j + 2] - sp[i, j]
    for i in range(h):
        for j in range(w + 2):
            di[i, j] = sp[i + 2, j] - sp[i, j]
    jsob = np.empty((h, w))
    isob = np.empty((h, w))
    mag = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            jv = dj[i + 1, j] * 2.0 + (dj[i, j] + dj[i + 2, j])
            iv = di[i, j + 1] * 2.0 + (di[i, j] + di[i, j + 2])
            jsob[i, j] = jv
            isob[i, j] = iv
            mag[i, j] = np.sqrt(iv * iv + jv * jv)
    return isob, jsob, mag


@njit(cache=True, nogil=True)
def nms(isob: np.ndarray, jsob: np.ndarray, mag: np.ndarray, low: float) -> np.ndarray:
    """scikit-image's bilinear non-maximum suppression on the interior; True where a pixel survives."""
    h, w = mag.shape
    out = np.zeros((h, w), dtype=np.bool_)
    for x in range(1, h - 1):
        for y in range(1, w - 1):
            m = mag[x, y]
            if not m >= low:
                continue
            iv = isob[x, y]
            jv = jsob[x, y]
            is_down = iv <= 0
            is_left = jv <= 0
            ai = abs(iv)
            aj = abs(jv)
            if (not is_down and not is_left) or (is_down and is_left):
                if ai > aj:
                    wgt = aj / ai
                    n11 = mag[x + 1, y]
                    n12 = mag[x + 1, y + 1]
                    n21 = mag[x - 1, y]
                    n22 = mag[x - 1, y - 1]
                else:
                    wgt = ai / aj
                    n11 = mag[x, y + 1]
                    n12 = mag[x + 1, y + 1]
                    n21 = mag[x, y - 1]
                    n22 = mag[x - 1, y - 1]
            else:
                if ai < aj:
                    wgt = ai / aj
                    n11 = mag[x, y + 1]
                    n12 = mag[x - 1, y + 1]
                    n21 = mag[x, y - 1]
                    n22 = mag[x + 1, y - 1]
                else:
                    wgt = aj / ai
                    n11 = mag[x - 1, y]
                    n12 = mag[x - 1, y + 1]
                    n21 = mag[x + 1, y]
                    n22 = mag[x + 1, y - 1]
            if (n12 * wgt + n11 * (1.0 - wgt)) <= m:
                if (n22 * wgt + n21 * (1.0 - wgt)) <= m:
                    out[x, y] = True
    return out


@njit(cache=True, nogil=True)
def widths_at(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, rising: np.ndarray, max_margin: int) -> np.ndarray:
    """Marziliano width at each (row, col): ``rising`` for gradient angle 0, else angle 180."""
    n = rows.shape[0]
    w = img.shape[1]
    out = np.empty(n, dtype=np.int64)
    for p in range(n):
        r = rows[p]
        c = cols[p]
        up = rising[p]
        left = max_margin
        for mg in range(max_margin + 1):
            outer = c - 2 - mg
            if outer < 0:
                left = mg
                break
            d = img[r, outer] - img[r, c - 1 - mg]
            if (up and d >= 0) or (not up and d <= 0):
                left = mg
                break
        right = max_margin
        for mg in range(max_margin + 1):
            outer = c + 2 + mg
            if outer >= w:
                right = mg
                break
            d = img[r, outer] - img[r, c + 1 + mg]
            if (up and d <= 0) or (not up and d >= 0):
                right = mg
                break
        out[p] = left + right + 2
    return out
