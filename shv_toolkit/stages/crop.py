"""THE definition of the SHV face crop, used by rendering, filters and the schema doc.

A square centred on the smoothed face box, side = face box side / ``crop_scale`` (0.8), cut on the
even pixel grid of 4:2:0 chroma (from the source's own planes when it is 8-bit limited-range 4:2:0,
else through RGB), black outside the frame, resized to ``out_size``. A clip whose crops leave the frame
by more than ``max_pad_fraction`` is rejected (``crop_out_of_frame``). Step by step: docs/crop.md.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from shv_toolkit.config import FaceConfig
from shv_toolkit.stages.faces import Track

#: drop reason recorded for clips whose crop leaves the frame beyond the policy
REJECT_REASON = "crop_out_of_frame"


@dataclass(frozen=True)
class CropBox:
    """Square crop centred on ``(cx, cy)`` with side ``side``, all in source pixels."""

    cx: float
    cy: float
    side: float

    def rect(self) -> tuple[int, int, int]:
        """Integer pixel square ``(ox, oy, n)``: columns ``ox..ox+n-1``, rows ``oy..oy+n-1``."""
        return _rect(self.cx, self.cy, self.side)

    def pad_fraction(self, frame_w: int, frame_h: int) -> float:
        """Share of the crop's pixels that lie outside a ``frame_w x frame_h`` frame (0..1)."""
        ox, oy, n = self.rect()
        iw = max(0, min(ox + n, frame_w) - max(ox, 0))
        ih = max(0, min(oy + n, frame_h) - max(oy, 0))
        return 1.0 - (iw * ih) / float(n * n)


def _rect(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    n = max(2, 2 * int(round(side / 2)))
    return 2 * math.floor((cx - n / 2) / 2 + 0.5), 2 * math.floor((cy - n / 2) / 2 + 0.5), n


def crop_boxes(track: Track, frame_w: int, frame_h: int, cfg: FaceConfig) -> np.ndarray:
    """``(N, 3)`` float array of ``(cx, cy, side)`` in source pixels for every frame of ``track``
    (pass the smoothed track: :func:`shv_toolkit.stages.faces.smooth_track`)."""
    if not 0 < cfg.crop_scale <= 1:
        raise ValueError(f"crop_scale must be in (0, 1], got {cfg.crop_scale}")
    b = np.asarray(track.boxes, dtype=np.float64)
    cx = (b[:, 0] + b[:, 2]) / 2 * frame_w
    cy = (b[:, 1] + b[:, 3]) / 2 * frame_h
    face_side = np.maximum((b[:, 2] - b[:, 0]) * frame_w, (b[:, 3] - b[:, 1]) * frame_h)
    return np.stack([cx, cy, face_side / cfg.crop_scale], axis=1)


def face_side_px(boxes: np.ndarray, cfg: FaceConfig) -> np.ndarray:
    """Face box side in source pixels from crop boxes (inverse of step 3)."""
    return np.asarray(boxes)[:, 2] * cfg.crop_scale


def pad_fractions(boxes: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
    """Per-frame :meth:`CropBox.pad_fraction` for an ``(N, 3)`` box array."""
    return np.array([CropBox(*map(float, b)).pad_fraction(frame_w, frame_h) for b in boxes])


@dataclass(frozen=True)
class CropDecision:
    """Out-of-frame verdict for a clip: ``ok`` False means drop with ``reason``."""

    ok: bool
    pad_fraction: float
    reason: str | None = None


def crop_decision(boxes: np.ndarray, frame_w: int, frame_h: int, cfg: FaceConfig) -> CropDecision:
    """Apply ``cfg.out_of_frame`` / ``cfg.max_pad_fraction`` to a clip's ``(N, 3)`` crop boxes."""
    pf = float(pad_fractions(boxes, frame_w, frame_h).max()) if len(boxes) else 0.0
    if cfg.out_of_frame == "reject":
        ok = pf <= 0.0
    elif cfg.out_of_frame == "pad":
        ok = pf <= cfg.max_pad_fraction
    else:
        raise ValueError(f"unknown out_of_frame policy {cfg.out_of_frame!r}")
    return CropDecision(ok, pf, None if ok else REJECT_REASON)


def _box_rect(box: CropBox | np.ndarray | tuple) -> tuple[int, int, int]:
    cx, cy, side = (box.cx, box.cy, box.side) if isinstance(box, CropBox) else map(float, box)
    return _rect(cx, cy, side)


def _cut(img: np.ndarray, ox: int, oy: int, n: int, fill: int) -> np.ndarray:
    """The ``n x n`` square of ``img`` (a plane or an RGB frame) at ``(ox, oy)``, ``fill`` where it
    leaves the image; a view when it lies inside."""
    h, w = img.shape[:2]
    xa, ya, xb, yb = max(ox, 0), max(oy, 0), min(ox + n, w), min(oy + n, h)
    if xa == ox and ya == oy and xb == ox + n and yb == oy + n:
        return img[oy:oy + n, ox:ox + n]
    sq = np.full((n, n, *img.shape[2:]), fill, np.uint8)
    if xb > xa and yb > ya:
        sq[ya - oy:yb - oy, xa - ox:xb - ox] = img[ya:yb, xa:xb]
    return sq


_SWS = threading.local()  # one swscale context per thread


def _shrink_sws(sq: np.ndarray, size: int) -> np.ndarray:
    """``sq`` (a plane or an RGB image) area-averaged to ``size x size`` by swscale: within one code value
    of OpenCV's INTER_AREA and 2.8x cheaper at non-integer ratios (a 1080p crop, ``perf/RESULTS.md``)."""
    rf = getattr(_SWS, "reformatter", None)
    if rf is None:
        rf = _SWS.reformatter = VideoReformatter()
    fmt = "gray" if sq.ndim == 2 else "rgb24"
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(sq), format=fmt)
    return rf.reformat(vf, width=size, height=size, interpolation="AREA", threads=1).to_ndarray()


def _resize_into(sq: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Step 5: ``sq`` resized to ``dst``'s square size (area when shrinking, cubic when enlarging)."""
    n, size = sq.shape[0], dst.shape[0]
    if n == size:
        dst[...] = sq
    elif n > size:
        dst[...] = _shrink_sws(sq, size)
    else:
        cv2.resize(sq, (size, size), dst=dst, interpolation=cv2.INTER_CUBIC)
    return dst


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.uint8)
    if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {shape} uint8 array, got {out.shape} {out.dtype}")
    return out


def apply_crop(frame: np.ndarray, box: CropBox | np.ndarray | tuple, out_size: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """Cut the crop square of ``box`` from ``frame`` (RGB uint8, source resolution), black outside
    the frame, resized to ``(out_size, out_size, 3)`` uint8 (see the module docstring).

    ``out``: a C-contiguous ``(out_size, out_size, 3)`` uint8 array to write the crop into (a frame of
    a clip buffer, which spares one copy per frame); returned."""
    out = _check_out(out, (out_size, out_size, 3))
    return _resize_into(_cut(frame, *_box_rect(box), 0), out)


def apply_crop_i420(planes: tuple[np.ndarray, np.ndarray, np.ndarray], box: CropBox | np.ndarray | tuple,
                    out_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The crop of ``box`` cut from a limited-range 4:2:0 frame's ``(Y, U, V)`` planes (source
    resolution; :meth:`shv_toolkit.core.media.SourceFrame.yuv420`) as one I420 image
    ``(out_size * 3 // 2, out_size)`` uint8 (see the module docstring), written into ``out`` if given."""
    if out_size % 2:
        raise ValueError(f"4:2:0 needs an even out_size, got {out_size}")
    out = _check_out(out, (out_size * 3 // 2, out_size))
    ox, oy, n = _box_rect(box)
    y, u, v = planes
    half = out_size // 2
    _resize_into(_cut(y, ox, oy, n, 16), out[:out_size])
    chroma = out[out_size:].reshape(2, half, half)  # a view: U then V, each half x half
    _resize_into(_cut(u, ox // 2, oy // 2, n // 2, 128), chroma[0])  # ox, oy, n are even
    _resize_into(_cut(v, ox // 2, oy // 2, n // 2, 128), chroma[1])
    return out
