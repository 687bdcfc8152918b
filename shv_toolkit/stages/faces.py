"""Face detection (mediapipe 0.10.21, model shipped in the wheel) and IoU tracking within a scene.

Boxes are ``(x0, y0, x1, y1)`` in normalised frame coordinates: ``x = pixel_x / width``,
``y = pixel_y / height`` with (0, 0) the top-left corner of the frame, so they mean the same at
analysis and at source resolution. A box may reach slightly outside ``[0, 1]`` when the face is cut
by the frame edge (mediapipe reports the whole face).

Detection frames: ``detections`` maps every grid frame on which the detector RAN to its list of
detections (an empty list means "ran, found nothing"); frames absent from the mapping were not
analysed (``FaceConfig.detect_stride`` > 1, and between keyframes whose faces agree, see
:func:`detections_agree` and :func:`shv_toolkit.stages.analysis.analyse_source`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from shv_toolkit.config import FaceConfig
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.mediapipe_import import import_mediapipe
from shv_toolkit.stages.scenes import Scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One face box in normalised frame coordinates with mediapipe's confidence score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    model: int = 0  # mediapipe model_selection that produced it (0 short range, 1 full range)

    @property
    def box(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


class FaceDetector:
    """mediapipe's BlazeFace detector (``mp.solutions.face_detection``), run per RGB frame.

    ``cfg.model_selection`` 0 is the short-range model (faces within ~2 m), 1 the full-range model;
    both ``.tflite`` files ship inside the mediapipe 0.10.21 wheel, so nothing is downloaded.
    The legacy solution graph has no temporal state: each frame is detected independently.
    Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, cfg: FaceConfig) -> None:
        self.cfg = cfg
        try:
            mp_fd = import_mediapipe().solutions.face_detection
        except (ImportError, AttributeError) as exc:  # mediapipe >= 0.10.22 wheels no longer ship the solutions models
            raise MissingWeightsError(
                "mediapipe face detection is unavailable (mediapipe 0.10.21 ships its models): "
                f"{exc}"
            ) from exc
        models = [int(cfg.model_selection)]
        fb = getattr(cfg, "fallback_model_selection", None)
        if fb is not None and int(fb) != models[0]:
            models.append(int(fb))
        self._models: list[tuple[int, object]] = []
        try:
            for m in models:
                self._models.append(
                    (m, mp_fd.FaceDetection(model_selection=m,
                                            min_detection_confidence=float(cfg.min_detection_confidence)))
                )
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            self.close()
            raise MissingWeightsError(f"mediapipe face detection model could not be loaded: {exc}") from exc

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """Faces in one ``(H, W, 3)`` uint8 RGB frame, highest score first.

        The primary model (``cfg.model_selection``) runs first; only when it finds nothing does the
        fallback model (``cfg.fallback_model_selection``) run. ``Detection.model`` says which found it.
        """
        img = np.ascontiguousarray(frame_rgb)
        out: list[Detection] = []
        for model, fd in self._models:
            res = fd.process(img)
            for d in res.detections or ():
                bb = d.location_data.relative_bounding_box
                if bb.width <= 0 or bb.height <= 0:
                    continue
                out.append(
                    Detection(
                        float(bb.xmin),
                        float(bb.ymin),
                        float(bb.xmin + bb.width),
                        float(bb.ymin + bb.height),
                        float(d.score[0]) if d.score else 0.0,
                        model,
                    )
                )
            if out:
                break
        out.sort(key=lambda d: -d.score)
        return out

    def close(self) -> None:
        for _, fd in self._models:
            fd.close()
        self._models = []

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_boxes(a: list[np.ndarray], b: list[np.ndarray], min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching of boxes ``a`` to boxes ``b`` by decreasing IoU (ties: lower index
    of ``a``, then of ``b``), pairs with IoU >= ``min_iou`` only: ``{index in b: index in a}``."""
    pairs = sorted(((iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)),
                   key=lambda p: (-p[0], p[1], p[2]))
    used_a: set[int] = set()
    matched: dict[int, int] = {}
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i not in used_a and j not in matched:
            used_a.add(i)
            matched[j] = i
    return matched


def detections_agree(a: list[Detection], b: list[Detection], min_iou: float) -> bool:
    """Whether two frames show the same faces in the same places: as many detections on both, and
    each of ``a`` paired one-to-one (:func:`match_boxes`) with one of ``b`` at IoU >= ``min_iou``."""
    return len(a) == len(b) and len(match_boxes([d.box for d in a], [d.box for d in b], min_iou)) == len(a)


@dataclass
class Track:
    """One subject's face through consecutive grid frames ``frames[0] .. frames[-1]``.

    * ``frames``: ``(N,)`` int grid frame indices, consecutive.
    * ``boxes``: ``(N, 4)`` normalised ``x0, y0, x1, y1``; detected where ``detected``, linearly
      interpolated between detections elsewhere.
    * ``detected``: ``(N,)`` bool, a detection was linked to this track on that frame.
    * ``analysed``: ``(N,)`` bool, the detector ran on that frame (all True with detect_stride 1).
    * ``scores``: ``(N,)`` mediapipe score of the linked detection, 0 where not detected.
    * ``other_face_ratio``: ``(N,)`` area of the largest OTHER detection on that frame divided by
      this track's box area (0 = no other face); on frames that were not analysed it is the
      larger of the two neighbouring analysed frames' values.
    """

    track_id: int
    frames: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    analysed: np.ndarray
    scores: np.ndarray
    other_face_ratio: np.ndarray
    smoothed: bool = field(default=False)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def present(self) -> np.ndarray:
        """``(N,)`` bool face-present flag used for face presence: detected on analysed frames;
        on frames skipped by the stride, True when the analysed frames on both sides detected it."""
        pres = self.detected.copy()
        if self.analysed.all():
            return pres
        idx = np.flatnonzero(self.analysed)
        for i in np.flatnonzero(~self.analysed):
            j = np.searchsorted(idx, i)
            if 0 < j < len(idx):
                pres[i] = self.detected[idx[j - 1]] and self.detected[idx[j]]
        return pres


@dataclass
class _Open:
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)


def track_faces(
    detections: dict[int, list[Detection]], scene: Scene, cfg: FaceConfig
) -> list[Track]:
    """Link detections of one scene into tracks, one per subject.

    Frame by frame (analysed frames of ``[scene.start, scene.end)`` in order), each open track's
    last box is matched to the detections greedily by decreasing IoU (pairs with IoU >=
    ``cfg.iou_threshold``); unmatched detections open new tracks. A track closes when it has gone
    more than ``max(cfg.max_gap_frames, cfg.detect_stride - 1)`` grid frames without a detection,
    unless it was detected on the previous analysed frame: frames the detector did not look at (between
    two keyframes whose faces agreed) never close a track, misses do.
    Each track spans its first to last detection; frames in between without a detection get the
    linearly interpolated box. Tracks are returned longest first (ties: earliest first), with
    ``track_id`` = position in that order.
    """
    max_gap = max(int(cfg.max_gap_frames), int(cfg.detect_stride) - 1)
    frames = sorted(k for k in detections if scene.start <= k < scene.end)
    open_: list[_Open] = []
    closed: list[_Open] = []
    prev: int | None = None  # the previous analysed frame
    for k in frames:
        dets = detections[k]
        boxes = [d.box for d in dets]
        # close stale tracks
        still = []
        for t in open_:
            (still if t.frames[-1] == prev or k - t.frames[-1] - 1 <= max_gap else closed).append(t)
        open_ = still
        prev = k
        assign = match_boxes([t.boxes[-1] for t in open_], boxes, cfg.iou_threshold)  # detection -> track
        areas = [d.area for d in dets]
        for di, d in enumerate(dets):
            if di in assign:
                t = open_[assign[di]]
            else:
                t = _Open()
                open_.append(t)
            other = max((a for j, a in enumerate(areas) if j != di), default=0.0)
            t.frames.append(k)
            t.boxes.append(d.box)
            t.scores.append(d.score)
            t.others.append(other / d.area if d.area > 0 else 0.0)
    closed.extend(open_)
    analysed_set = set(frames)
    tracks = [_finish(t, detections, analysed_set) for t in closed]
    tracks.sort(key=lambda t: (-len(t), int(t.frames[0])))
    for i, t in enumerate(tracks):
        t.track_id = i
    return tracks


def _finish(t: _Open, detections: dict[int, list[Detection]], analysed_set: set[int]) -> Track:
    f0, f1 = t.frames[0], t.frames[-1]
    frames = np.arange(f0, f1 + 1)
    det_idx = np.asarray(t.frames) - f0
    kb = np.asarray(t.boxes, dtype=np.float64)
    boxes = np.stack([np.interp(frames, t.frames, kb[:, c]) for c in range(4)], axis=1)
    detected = np.zeros(len(frames), bool)
    detected[det_idx] = True
    scores = np.zeros(len(frames))
    scores[det_idx] = t.scores
    analysed = np.array([int(k) in analysed_set for k in frames])
    other = np.zeros(len(frames))
    other[det_idx] = t.others
    # analysed frames where this track was not detected: other faces relative to the interpolated box
    for i in np.flatnonzero(analysed & ~detected):
        dets = detections[int(frames[i])]
        b = boxes[i]
        area = (b[2] - b[0]) * (b[3] - b[1])
        other[i] = max((d.area for d in dets), default=0.0) / area if area > 0 else 0.0
    if not analysed.all():
        idx = np.flatnonzero(analysed)
        for i in np.flatnonzero(~analysed):
            j = np.searchsorted(idx, i)
            nb = [other[idx[m]] for m in (j - 1, j) if 0 <= m < len(idx)]
            other[i] = max(nb) if nb else 0.0
    return Track(-1, frames, boxes, detected, analysed, scores, other)


def _median_filter(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median with edge-replicated padding (``window`` forced odd)."""
    if window <= 1 or len(x) < 2:
        return x.copy()
    w = window if window % 2 else window + 1
    h = w // 2
    padded = np.pad(x, (h, h), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)


def smooth_track(track: Track, cfg: FaceConfig) -> Track:
    """Median-smooth box centre (cx, cy) and size (w, h) over ``cfg.smooth_window`` frames.

    Each of the four series is filtered with a centred running median of ``smooth_window`` frames
    (made odd by adding one if even; the series is edge-replicated at both ends), then the box is
    rebuilt as ``cx -/+ w/2, cy -/+ h/2``. Everything else is copied.
    """
    b = track.boxes
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    win = int(cfg.smooth_window)
    cx, cy, w, h = (_median_filter(v, win) for v in (cx, cy, w, h))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return replace(track, boxes=boxes, smoothed=True)
