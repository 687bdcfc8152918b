"""LMD, landmark distance (lower is better), mouth and full face.

Convention of the widely copied ``LMDMeter`` (AD-NeRF / RAD-NeRF / ER-NeRF evaluation code):

1. 68-point landmarks of every generated and ground-truth frame (protocol's landmark backend, dlib for
   ``shv-v1``), in pixels at the evaluation resolution: the ground truth's size after
   :func:`benchmark.metrics.base.align` (the generated clip is resized to it), or the protocol's
   ``eval_size`` when set (both clips resized).
2. Keep the mouth points 48-67 (``lmd``) or all 68 (``lmd_face``); subtract each frame's mean point
   from that frame's points (removes head translation, not scale or rotation).
3. Per frame, the mean over points of the L2 distance between generated and ground-truth points
   (protocol ``lmd_reduction="mean"``, shv-v1), or their sum (``"sum"``, protocol ``singer-paper``: the
   SINGER paper's scale, LMD summed over the 20 mouth points in pixels at 512x512).
4. Per clip, the mean over frames; the dataset value is the mean over clips. (LMDMeter averages over
   all frames of the dataset; that frame-weighted mean is in ``extras["frame_weighted"]``; the two are
   equal when clips have equal length.)

Frames where either clip has no detected face are skipped and counted (``extras["skipped_frames"]``,
per clip in ``extras["per_clip_skipped"]``); ``extras["frames_without_landmarks"]`` gives, for every
clip, the frames without landmarks in the generated and in the ground-truth clip and the frames compared.
A clip pair with no frame where both have a face raises
:class:`MetricInputError`: it cannot be scored, and scoring it as 0 or dropping it silently would both
bias the mean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from benchmark.metrics.base import Clip, Metric, MetricInputError, MetricResult, align, resize_frames
from benchmark.metrics.landmarks import (
    MOUTH,
    LandmarkBackend,
    LandmarkMetric,
    backend_for,
    clip_landmarks,
    missing_frames,
)
from benchmark.protocol import Protocol, get_protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMDValue:
    lmd: float  # mouth (48-67)
    lmd_face: float  # all 68 points
    n_frames: int  # frames scored
    n_skipped: int  # frames skipped (no face in one of the clips)
    gen_missing: int = 0  # frames of the generated clip without landmarks
    gt_missing: int = 0  # frames of the ground-truth clip without landmarks


REDUCTIONS = ("mean", "sum")


def landmark_distance(
    gen: np.ndarray, gt: np.ndarray, points: np.ndarray | slice | None = None, reduction: str = "mean"
) -> np.ndarray:
    """Per-frame LMD of (T, 68, 2) landmark arrays on ``points`` (default all): the ``reduction``
    (``"mean"`` or ``"sum"``) over points of the point distances; NaN where a face is missing."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"LMD reduction must be one of {REDUCTIONS}, got {reduction!r}")
    g = np.asarray(gen, dtype=np.float64)
    r = np.asarray(gt, dtype=np.float64)
    if g.shape != r.shape:
        raise MetricInputError(f"landmark shapes differ: {g.shape} vs {r.shape}")
    if points is not None:
        g, r = g[:, points], r[:, points]
    g = g - g.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=1, keepdims=True)
    dist = np.linalg.norm(g - r, axis=-1)
    return dist.sum(axis=1) if reduction == "sum" else dist.mean(axis=1)


def lmd_from_landmarks(gen: np.ndarray, gt: np.ndarray, reduction: str = "mean") -> LMDValue:
    """Mouth and face LMD of one clip pair from their (T, 68, 2) landmarks (NaN rows: no face)."""
    mouth = landmark_distance(gen, gt, MOUTH, reduction)
    face = landmark_distance(gen, gt, reduction=reduction)
    ok = np.isfinite(face) & np.isfinite(mouth)
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise MetricInputError("LMD: no frame where both clips have a detected face")
    return LMDValue(
        float(mouth[ok].mean()), float(face[ok].mean()), n_ok, int(len(ok) - n_ok),
        missing_frames(gen), missing_frames(gt),
    )


def eval_frames(gen: Clip, gt: Clip, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """Aligned frames at the evaluation resolution (see module docstring)."""
    gen_a, gt_a = align(gen, gt, protocol.max_length_mismatch)
    g, r = gen_a.frames, gt_a.frames
    if protocol.eval_size is not None:
        g, r = resize_frames(g, protocol.eval_size), resize_frames(r, protocol.eval_size)
    return g, r


def lmd_clip(
    generated: Clip,
    ground_truth: Clip,
    backend: LandmarkBackend | str | None = None,
    protocol: Protocol | str = "shv-v1",
) -> LMDValue:
    """Pure per-clip LMD: align, detect (through the shared landmark cache) and compare."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    be = backend_for(backend, proto)
    g, r = eval_frames(generated, ground_truth, proto)
    try:
        return lmd_from_landmarks(clip_landmarks(g, be), clip_landmarks(r, be), proto.lmd_reduction)
    except MetricInputError as e:
        raise MetricInputError(f"{ground_truth.clip_id or ground_truth.path}: {e}") from None


class LMD(LandmarkMetric, Metric):
    """Streaming LMD. ``compute()`` is mouth LMD; ``results()`` gives ``[lmd, lmd_face]``."""

    name = "lmd"
    higher_is_better = False

    def __init__(self, protocol: Protocol | str | None = None, backend: LandmarkBackend | str | None = None) -> None:
        super().__init__(protocol, backend)
        self.per_clip: dict[str, LMDValue]
        self.add_state("per_clip", {}, "union")

    def update(self, generated: Clip, ground_truth: Clip) -> float:
        value = lmd_clip(generated, ground_truth, self.backend, self.protocol)
        key = self._new_key(ground_truth)
        if value.n_skipped:
            log.info("LMD %s: %d frame(s) without a face skipped", key, value.n_skipped)
        self.per_clip[key] = value
        return value.lmd

    def _result(self, name: str, field: str) -> MetricResult:
        vals = {k: getattr(self.per_clip[k], field) for k in sorted(self.per_clip)}  # order-free sums
        clips = [self.per_clip[k] for k in vals]
        n_frames = sum(v.n_frames for v in clips)
        weighted = sum(getattr(v, field) * v.n_frames for v in clips) / n_frames if n_frames else None
        extras = {
            "protocol": self.protocol.name,
            "unit": "pixels at the evaluation resolution",
            "reduction": f"{self.protocol.lmd_reduction} over points per frame",
            "points": "48-67 (mouth)" if field == "lmd" else "0-67 (face)",
            "frames": n_frames,
            "skipped_frames": sum(v.n_skipped for v in self.per_clip.values()),
            "per_clip_skipped": {k: v.n_skipped for k, v in self.per_clip.items() if v.n_skipped},
            "frames_without_landmarks": {
                k: {"generated": v.gen_missing, "ground_truth": v.gt_missing, "frames": v.n_frames + v.n_skipped}
                for k, v in sorted(self.per_clip.items())
            },
            "frame_weighted": weighted,
        }
        if self.per_clip:
            extras.update(self.backend.describe())
        value = float(np.mean(list(vals.values()))) if vals else None
        return MetricResult(name, value, self.higher_is_better, len(vals), vals, extras)

    def compute(self) -> MetricResult:
        return self._result("lmd", "lmd")

    def results(self) -> list[MetricResult]:
        return [self._result("lmd", "lmd"), self._result("lmd_face", "lmd_face")]
