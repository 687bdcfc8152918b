"""Diversity of facial motion (higher is better), on the generated clip alone.

Per clip (no reference needed; a ground truth, when given, only aligns the clip and names it):

1. 68-point landmarks of every generated frame (protocol's landmark backend), frames without a face
   dropped (at least 2 frames with a face are needed, else :class:`MetricInputError`).
2. Face size ``s`` = median over frames of the inter-ocular distance (outer eye corners 36 and 45).
   A per-clip scalar, so the normalisation adds no frame-to-frame noise; it makes the value
   independent of resolution and of how large the face is in the frame.
3. Standard deviation over time (population, ddof=0) of each of the 136 landmark coordinates in image
   coordinates (not re-centred: head translation, rotation and expression all count as motion),
   divided by ``s`` (protocol ``diversity_normaliser="inter-ocular"``, shv-v1). With
   ``diversity_normaliser="none"`` (protocol ``singer-paper``, the SINGER paper's pixel scale) it is not
   divided: pixels at the evaluation size (512x512 for singer-paper).
4. The mean over the 136 coordinates is the clip's Diversity; the dataset value is the mean over clips.

``extras["frames_without_landmarks"]``: per clip, the generated frames without landmarks and the frames.

A still face scores ~0 (detector jitter only); a talking or singing head scores more.
"""

from __future__ import annotations

import logging

import numpy as np

from benchmark.metrics.base import Clip, Metric, MetricInputError, MetricResult, align, resize_frames
from benchmark.metrics.landmarks import (
    LandmarkBackend,
    LandmarkMetric,
    backend_for,
    clip_landmarks,
    inter_ocular,
    missing_frames,
)
from benchmark.protocol import Protocol, get_protocol

log = logging.getLogger(__name__)


NORMALISERS = ("inter-ocular", "none")


def diversity_from_landmarks(landmarks: np.ndarray, normaliser: str = "inter-ocular") -> float:
    """Diversity of one clip from its (T, 68, 2) landmarks (NaN rows: no face): the mean over the 136
    coordinates of their std over time, over the median inter-ocular distance or (``"none"``) in pixels."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"Diversity normaliser must be one of {NORMALISERS}, got {normaliser!r}")
    lms = np.asarray(landmarks, dtype=np.float64)
    valid = ~np.isnan(lms).any(axis=(1, 2))
    if valid.sum() < 2:
        raise MetricInputError(f"Diversity: {int(valid.sum())} frame(s) with a face, need at least 2")
    lms = lms[valid]
    if normaliser == "none":
        return float(lms.std(axis=0).mean())
    size = float(np.median(inter_ocular(lms)))
    if size <= 0:
        raise MetricInputError("Diversity: degenerate landmarks (zero inter-ocular distance)")
    return float((lms.std(axis=0) / size).mean())


def generated_frames(generated: Clip, ground_truth: Clip | None, protocol: Protocol) -> np.ndarray:
    frames = generated.frames
    if ground_truth is not None:
        frames = align(generated, ground_truth, protocol.max_length_mismatch)[0].frames
    if protocol.eval_size is not None:
        frames = resize_frames(frames, protocol.eval_size)
    return frames


def diversity_clip(
    generated: Clip,
    ground_truth: Clip | None = None,
    backend: LandmarkBackend | str | None = None,
    protocol: Protocol | str = "shv-v1",
) -> float:
    """Pure per-clip Diversity of ``generated`` (``ground_truth`` only aligns it)."""
    return diversity_clip_counted(generated, ground_truth, backend, protocol)[0]


def diversity_clip_counted(
    generated: Clip,
    ground_truth: Clip | None = None,
    backend: LandmarkBackend | str | None = None,
    protocol: Protocol | str = "shv-v1",
) -> tuple[float, int, int]:
    """:func:`diversity_clip` with the frames without landmarks and the frames of the clip."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    be = backend_for(backend, proto)
    lms = clip_landmarks(generated_frames(generated, ground_truth, proto), be)
    try:
        value = diversity_from_landmarks(lms, proto.diversity_normaliser)
    except MetricInputError as e:
        raise MetricInputError(f"{generated.clip_id or generated.path}: {e}") from None
    return value, missing_frames(lms), len(lms)


class Diversity(LandmarkMetric, Metric):
    name = "diversity"
    higher_is_better = True

    def __init__(self, protocol: Protocol | str | None = None, backend: LandmarkBackend | str | None = None) -> None:
        super().__init__(protocol, backend)
        self.per_clip: dict[str, float]
        self.add_state("per_clip", {}, "union")
        self.frames_without_landmarks: dict[str, dict[str, int]]
        self.add_state("frames_without_landmarks", {}, "union")

    def update(self, generated: Clip, ground_truth: Clip | None = None) -> float:
        value, n_missing, n_frames = diversity_clip_counted(generated, ground_truth, self.backend, self.protocol)
        key = self._new_key(ground_truth, generated)
        self.per_clip[key] = value
        self.frames_without_landmarks[key] = {"generated": n_missing, "frames": n_frames}
        return value

    def compute(self) -> MetricResult:
        vals = {k: self.per_clip[k] for k in sorted(self.per_clip)}
        extras: dict = {
            "protocol": self.protocol.name,
            "normaliser": "median inter-ocular distance (points 36-45) per clip"
            if self.protocol.diversity_normaliser == "inter-ocular"
            else "none (pixels at the evaluation size)",
            "input": "generated clip only",
            "frames_without_landmarks": {k: dict(self.frames_without_landmarks[k]) for k in vals
                                         if k in self.frames_without_landmarks},
        }
        if vals:
            extras.update(self.backend.describe())
        value = float(np.mean(list(vals.values()))) if vals else None
        return MetricResult(self.name, value, self.higher_is_better, len(vals), vals, extras)
