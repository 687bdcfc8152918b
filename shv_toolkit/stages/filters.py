"""Pipeline step 7: per-clip quality scores and the keep/drop decision.

Every filter first computes a score (stored per clip as ``score_<name>`` in ``clips.parquet``);
:func:`decide` then compares the scores with the thresholds of :class:`~shv_toolkit.config.FilterConfig`
in a fixed order and returns the first failing filter's name (``drop_reason``, one of
:data:`~shv_toolkit.manifest.scores.DROP_REASONS`), its value and its threshold (``drop_value``,
``drop_threshold``). ``FilterConfig.mode == "score-only"`` keeps every clip.

Input of :func:`score_clip` is the clip as the crop stage hands it over: ``(T, S, S, 3) uint8`` RGB
crops (S = 512 by default; in a build, grey levels are the clips' own luma, see ``score_clip``'s ``grey``) in which the smoothed face box is centred and fills ``crop_scale`` of the
side, the clip's 16 kHz mono mix and vocals stem (either may be ``None``), and the per-frame face
statistics of the tracked subject (:class:`FaceStats`, source pixels).

Scores (all ``float``; ``nan`` means "could not be measured" and fails its filter unless the filter is
disabled by setting its threshold to ``None``):

================== ==========================================================================
face_presence      share of frames in which the tracked face was detected
other_face_ratio   95th percentile over frames of (second-largest face area / tracked face area)
face_size_px       median face box side (source pixels) over frames with a detection
luminance          mean grey level (0..255) of the face region, black borders excluded
border_fraction    share of the crop covered by black bars (letterbox, pillarbox, padding)
sharpness          variance of the Laplacian of the grey face region at its source resolution
motion             mean absolute difference of consecutive grey frames (0..255)
static_frame_share share of consecutive frame pairs that are (nearly) identical
yaw_deg            median absolute head yaw (degrees) from face-mesh landmarks, every pose_stride-th frame
pitch_deg          median absolute head pitch (degrees), the same frames
loudness_db        RMS level in dBFS of the vocals stem if given, else of the mix (floor -120)
vocal_activity     share of 20 ms frames whose voice-band energy is above the activity threshold
================== ==========================================================================
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from shv_toolkit.config import FilterConfig
from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.mediapipe_import import import_mediapipe
from shv_toolkit.manifest.scores import CROP_OUT_OF_FRAME, DAMAGED_STREAM, RULES, SCORE_NAMES

log = logging.getLogger(__name__)

LOUDNESS_FLOOR_DB = -120.0
_EPS = 1e-12


@dataclass
class FaceStats:
    """Per-frame facts about the tracked subject, from the face stage (all arrays of length T).

    ``detected``: the tracked face was detected in that frame (not only interpolated);
    ``face_side_px``: face box side (max of width and height) in source pixels, ``nan`` if unknown;
    ``other_face_ratio``: area of the largest other face / area of the tracked face (0 if none);
    ``crop_scale``: face box side / crop side of the crops (``FaceConfig.crop_scale``), which lets
    :func:`score_clip` measure sharpness at the face's source resolution.
    """

    detected: np.ndarray
    face_side_px: np.ndarray
    other_face_ratio: np.ndarray
    crop_scale: float = 0.8

    def __post_init__(self) -> None:
        self.detected = np.asarray(self.detected, dtype=bool).reshape(-1)
        self.face_side_px = np.asarray(self.face_side_px, dtype=np.float64).reshape(-1)
        self.other_face_ratio = np.asarray(self.other_face_ratio, dtype=np.float64).reshape(-1)
        n = len(self.detected)
        if len(self.face_side_px) != n or len(self.other_face_ratio) != n:
            raise ValueError(
                f"FaceStats arrays differ in length: detected {n}, face_side_px {len(self.face_side_px)}, "
                f"other_face_ratio {len(self.other_face_ratio)}"
            )


# ----------------------------------------------------------------------------------------- pose


# 3D reference points of an average head (millimetres) in OpenCV camera axes (x right, y down,
# z away from the camera) for a face looking straight into the camera; the nose tip is the origin.
# Values: the widely used 6-point generic head model (nose, chin, eye outer corners, mouth corners).
_MODEL_POINTS = np.array(
    [
        [0.0, 0.0, 0.0],  # nose tip                      mesh 1
        [0.0, 330.0, 65.0],  # chin                       mesh 152
        [-225.0, -170.0, 135.0],  # image-left eye outer corner  mesh 33
        [225.0, -170.0, 135.0],  # image-right eye outer corner mesh 263
        [-150.0, 150.0, 125.0],  # image-left mouth corner     mesh 61
        [150.0, 150.0, 125.0],  # image-right mouth corner     mesh 291
    ],
    dtype=np.float64,
)
_MESH_IDS = (1, 152, 33, 263, 61, 291)


def face_mesh_model_path() -> Path:
    path = Path(import_mediapipe().__file__).parent / "modules" / "face_landmark" / "face_landmark.tflite"
    if not path.is_file():
        raise MissingWeightsError(
            f"mediapipe face mesh model not found at {path} (mediapipe 0.10.21 ships it; later wheels do not)"
        )
    return path


def pose_from_points(points_2d: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Yaw and pitch (degrees) of a head from the 6 image points of ``_MESH_IDS`` (pixels).

    Pinhole camera with focal length = image width and the principal point at the centre, no lens
    distortion; ``cv2.solvePnP`` (iterative) fits the generic head model, and the rotation is
    decomposed into Euler angles with ``cv2.RQDecomp3x3``, i.e. ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``
    in camera axes: yaw about the vertical axis (sign follows the image: a mirrored face has the
    opposite yaw), pitch about the horizontal axis.
    """
    cam = np.array([[width, 0.0, width / 2.0], [0.0, width, height / 2.0], [0.0, 0.0, 1.0]])
    ok, rvec, _tvec = cv2.solvePnP(
        _MODEL_POINTS, np.asarray(points_2d, np.float64).reshape(6, 1, 2), cam, np.zeros(4),
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return math.nan, math.nan
    rot, _ = cv2.Rodrigues(rvec)
    angles = cv2.RQDecomp3x3(rot)[0]
    pitch, yaw = float(angles[0]), float(angles[1])
    # Euler angles near 180 degrees are the same pose expressed the other way round
    pitch = (pitch + 180.0) % 360.0 - 180.0
    if abs(pitch) > 90.0:
        pitch = pitch - math.copysign(180.0, pitch)
    return yaw, pitch


class PoseEstimator:
    """Head yaw/pitch from mediapipe 0.10.21 face-mesh landmarks (model shipped in the wheel, offline).

    Use as a context manager (it owns a mediapipe graph)::

        with PoseEstimator() as pose:
            yaw, pitch = pose.estimate(frames, stride=5)
    """

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        face_mesh_model_path()  # clear error before mediapipe fails obscurely
        self._mesh = import_mediapipe().solutions.face_mesh.FaceMesh(
            static_image_mode=True,  # sampled frames are not consecutive: detect on each
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
        )
        self._closed = False

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """The 6 pose landmarks ``(6, 2)`` in pixels of one RGB frame, or ``None`` without a face."""
        if self._closed:
            raise RuntimeError("PoseEstimator is closed")
        h, w = frame.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(frame))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[lm[i].x * w, lm[i].y * h] for i in _MESH_IDS], dtype=np.float64)

    def estimate_frame(self, frame: np.ndarray) -> tuple[float, float]:
        """``(yaw, pitch)`` in degrees of one RGB frame; ``(nan, nan)`` when no face is found."""
        pts = self.landmarks(frame)
        if pts is None:
            return math.nan, math.nan
        h, w = frame.shape[:2]
        return pose_from_points(pts, w, h)

    def estimate(self, frames: np.ndarray, stride: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Yaw and pitch arrays (degrees) for frames ``0, stride, 2*stride, ...`` (``nan`` = no face)."""
        idx = range(0, len(frames), max(1, stride))
        out = np.array([self.estimate_frame(frames[i]) for i in idx], dtype=np.float64).reshape(-1, 2)
        return out[:, 0], out[:, 1]

    def close(self) -> None:
        if not self._closed:
            self._mesh.close()
            self._closed = True

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------- scores


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _central(img: np.ndarray, fraction: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return img[y0 : y0 + ch, x0 : x0 + cw]


def border_box(frames_grey: np.ndarray, black_level: float, min_share: float = 0.98) -> tuple[int, int, int, int]:
    """Content box ``(top, bottom, left, right)`` (exclusive ends) inside black bars.

    A row (column) belongs to a bar when at least ``min_share`` of its pixels stay at or below
    ``black_level`` in every analysed frame (the per-pixel maximum over time); bars are counted
    from each edge inwards.
    """
    peak = frames_grey.max(axis=0)
    dark = peak <= black_level
    rows = dark.mean(axis=1) >= min_share
    cols = dark.mean(axis=0) >= min_share
    h, w = peak.shape

    def run(mask: np.ndarray) -> int:
        nz = np.flatnonzero(~mask)
        return int(nz[0]) if len(nz) else len(mask)

    top = run(rows)
    if top >= h:  # completely black
        return 0, 0, 0, 0
    bottom = h - run(rows[::-1])
    left = run(cols)
    right = w - run(cols[::-1])
    return top, bottom, left, right


def sharpness_analysis_size(region_px: int, face_side_px: float, crop_scale: float, cfg: FilterConfig) -> int:
    """Side (pixels) at which the face region's Laplacian is measured.

    Crops of small faces are upscaled, which lowers the Laplacian variance of perfectly sharp
    footage; measuring at the region's size in the *source* (``face_side / crop_scale *
    face_region_fraction``) makes the score describe the recording, not the upscaling. Never above
    the region's size in the crop (detail beyond the output is gone anyway), never below 32 px.
    """
    if not (face_side_px > 0 and crop_scale > 0):
        return region_px
    native = int(round(face_side_px / crop_scale * cfg.face_region_fraction))
    return int(min(region_px, max(32, native)))


def loudness_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS (full scale = 1.0), floored at ``LOUDNESS_FLOOR_DB``."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return LOUDNESS_FLOOR_DB
    rms = math.sqrt(float(np.mean(a * a)))
    return max(LOUDNESS_FLOOR_DB, 20.0 * math.log10(rms + _EPS))


def voice_band_levels_db(audio: np.ndarray, sample_rate: int = 16000, frame_ms: float = 20.0,
                         band_hz: tuple[float, float] = (80.0, 4000.0)) -> np.ndarray:
    """Per-frame level (dBFS) of the voice band in non-overlapping ``frame_ms`` frames (Hann window).

    The level is the band's share of the frame's power expressed like an RMS level, so a full-scale
    sine inside the band reads about -3 dB, silence reads ``LOUDNESS_FLOOR_DB``.
    """
    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    n = int(round(sample_rate * frame_ms / 1000.0))
    m = len(a) // n
    if m == 0:
        return np.zeros(0)
    frames = a[: m * n].reshape(m, n)
    win = np.hanning(n)
    spec = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    # Parseval: sum |X|^2 over the one-sided spectrum ~ n/2 * sum(x^2 w^2); normalise by the window
    power = 2.0 * spec[:, band].sum(axis=1) / (n * float(np.sum(win * win)))
    return np.maximum(LOUDNESS_FLOOR_DB, 10.0 * np.log10(power + _EPS))


def vocal_activity(audio: np.ndarray, cfg: FilterConfig, sample_rate: int = 16000) -> float:
    """Share of 20 ms frames with voice-band level above ``max(floor, p95 - relative)``.

    The threshold is adaptive: ``cfg.vad_relative_db`` below the clip's 95th-percentile frame
    level (so quiet passages between phrases count as inactive whatever the recording gain),
    but never below the absolute floor ``cfg.vad_floor_db`` (so noise in a silent clip is inactive).
    """
    levels = voice_band_levels_db(audio, sample_rate)
    if levels.size == 0:
        return 0.0
    thr = max(cfg.vad_floor_db, float(np.percentile(levels, 95)) - cfg.vad_relative_db)
    return float(np.mean(levels > thr))


#: frame size of the motion score
MOTION_SIZE = 128


def motion_frames(grey: np.ndarray) -> np.ndarray:
    """``(T, 128, 128) float32``: each grey frame area-averaged to the motion analysis size. When the
    frames are a whole multiple of it, one resize of the stacked frames does it (every averaged block lies
    inside one frame: the same values, 1.6x faster than frame by frame)."""
    t, h, w = grey.shape
    m = MOTION_SIZE
    if h % m == 0 and w % m == 0:
        small = cv2.resize(np.ascontiguousarray(grey).reshape(t * h, w), (m, t * m), interpolation=cv2.INTER_AREA)
        return small.reshape(t, m, m).astype(np.float32)
    return np.stack([cv2.resize(g, (m, m), interpolation=cv2.INTER_AREA) for g in grey]).astype(np.float32)


def score_clip(
    frames: np.ndarray,
    audio: np.ndarray | None,
    vocals: np.ndarray | None,
    face: FaceStats,
    cfg: FilterConfig,
    pose: PoseEstimator | None = None,
    sample_rate: int = 16000,
    *,
    grey: np.ndarray | None = None,
) -> dict[str, float]:
    """All quality scores of one clip (keys :data:`SCORE_NAMES`); see the module docstring.

    ``frames``: ``(T, S, S, 3) uint8`` RGB crops; ``audio``/``vocals``: mono float at ``sample_rate``
    (``None`` when absent: the audio scores are then ``nan``); ``pose``: an open
    :class:`PoseEstimator` (``None``: yaw/pitch are ``nan``, i.e. not measured).
    ``grey``: the clip's ``(T, S, S) uint8`` grey levels when the caller has them (the luma of the I420
    crops, :func:`shv_toolkit.core.media.i420_grey`); every grey-level score then uses them, and ``frames``
    may be any sequence of ``T`` RGB frames (e.g. :class:`~shv_toolkit.stages.clips.ClipFrames`, which
    converts on access): only the head-pose frames are read. Without it, grey is OpenCV's ``RGB2GRAY``.
    """
    if grey is None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t = len(frames)
    if t == 0:
        raise ValueError("score_clip needs at least one frame")
    if len(face.detected) != t:
        raise ValueError(f"FaceStats has {len(face.detected)} frames, the clip {t}")
    if grey is None:
        grey = np.stack([_grey(f) for f in frames])
    else:
        grey = np.asarray(grey)
        if grey.ndim != 3 or grey.dtype != np.uint8 or len(grey) != t:
            raise ValueError(f"expected ({t}, H, W) uint8 grey frames, got {grey.shape} {grey.dtype}")
    stride = max(1, int(cfg.sample_stride))
    grey_s = grey[::stride]
    s: dict[str, float] = {}

    # --- face statistics (from the face stage)
    s["face_presence"] = float(np.mean(face.detected))
    ofr = np.nan_to_num(face.other_face_ratio, nan=0.0)
    s["other_face_ratio"] = float(np.percentile(ofr, 95, method="higher"))
    sides = face.face_side_px[face.detected & np.isfinite(face.face_side_px)]
    s["face_size_px"] = float(np.median(sides)) if sides.size else 0.0

    # --- black bars, then luminance of the face region inside them
    top, bottom, left, right = border_box(grey_s, cfg.border_black_level)
    h, w = grey_s.shape[1:]
    content_area = max(0, bottom - top) * max(0, right - left)
    s["border_fraction"] = 1.0 - content_area / float(h * w)
    face_region = _central(grey_s.transpose(1, 2, 0), cfg.face_region_fraction).transpose(2, 0, 1)
    fy0, fx0 = (h - face_region.shape[1]) // 2, (w - face_region.shape[2]) // 2
    if content_area > 0:
        y0, y1 = max(top, fy0), min(bottom, fy0 + face_region.shape[1])
        x0, x1 = max(left, fx0), min(right, fx0 + face_region.shape[2])
        region = grey_s[:, y0:y1, x0:x1] if (y1 > y0 and x1 > x0) else grey_s[:, top:bottom, left:right]
    else:
        region = grey_s
    s["luminance"] = float(region.mean())

    # --- sharpness: variance of Laplacian of the face region at the face's source resolution
    size = sharpness_analysis_size(face_region.shape[1], s["face_size_px"], face.crop_scale, cfg)
    lap_vars = []
    for g in face_region:
        if g.shape[0] != size:
            g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA)
        lap_vars.append(float(cv2.Laplacian(g.astype(np.float32), cv2.CV_32F, ksize=1).var()))
    s["sharpness"] = float(np.median(lap_vars))

    # --- motion on every frame at 128x128
    small = motion_frames(grey)
    if t >= 2:
        diffs = np.abs(np.diff(small, axis=0)).mean(axis=(1, 2))
        s["motion"] = float(diffs.mean())
        s["static_frame_share"] = float(np.mean(diffs <= cfg.static_frame_diff))
    else:
        s["motion"] = math.nan
        s["static_frame_share"] = math.nan

    # --- head pose
    if pose is not None:
        yaw, pitch = pose.estimate(frames, stride=max(1, int(cfg.pose_stride)))
        ok = np.isfinite(yaw) & np.isfinite(pitch)
        s["yaw_deg"] = float(np.median(np.abs(yaw[ok]))) if ok.any() else math.nan
        s["pitch_deg"] = float(np.median(np.abs(pitch[ok]))) if ok.any() else math.nan
    else:
        s["yaw_deg"] = math.nan
        s["pitch_deg"] = math.nan

    # --- audio: on the vocals stem when there is one
    voice = vocals if vocals is not None else audio
    if voice is None:
        s["loudness_db"] = math.nan
        s["vocal_activity"] = math.nan
    else:
        s["loudness_db"] = loudness_dbfs(voice)
        s["vocal_activity"] = vocal_activity(voice, cfg, sample_rate)
    return {k: s[k] for k in SCORE_NAMES}


class Decision(NamedTuple):
    """The keep/drop verdict of one clip. For a dropped clip: ``reason`` the failing filter (a score
    name or ``crop_out_of_frame``), ``value`` its measured value (``nan``: not measured), ``threshold``
    the threshold it failed; all three ``None`` for a kept clip."""

    keep: bool
    reason: str | None = None
    value: float | None = None
    threshold: float | None = None


KEPT = Decision(True)


def decide(scores: dict[str, float], cfg: FilterConfig) -> Decision:
    """The first failing filter of ``scores``, as a :class:`Decision`.

    Filters run in the order of :data:`~shv_toolkit.manifest.scores.RULES`; a threshold set to
    ``None`` disables its filter; a ``nan`` score (not measured) fails its filter with value ``nan``.
    With ``cfg.mode == "score-only"`` every clip is kept.
    """
    if cfg.mode == "score-only":
        return KEPT
    if cfg.mode != "filter":
        raise ValueError(f"unknown filter mode {cfg.mode!r}")
    for name, op, field_name in RULES:
        thr = getattr(cfg, field_name)
        if thr is None:
            continue
        if name not in scores:
            raise KeyError(f"score {name!r} missing")
        v = float(scores[name])
        passed = v >= thr if op == ">=" else v <= thr  # False for nan
        if not passed:
            return Decision(False, name, v, float(thr))
    return KEPT


# ------------------------------------------------------------------------------------ in a build


class ModelPool:
    """Instances of a model for concurrent threads: :meth:`borrow` lends a free one, or makes one
    with ``make()`` when all are in use; :meth:`close` closes them all."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Any]:
        try:
            obj = self._free.get_nowait()
        except queue.Empty:
            obj = self._make()
            with self._lock:
                self._all.append(obj)
        try:
            yield obj
        finally:
            self._free.put(obj)

    def __len__(self) -> int:
        return len(self._all)

    def close(self) -> None:
        with self._lock:
            objs, self._all = self._all, []
        self._free = queue.SimpleQueue()
        for obj in objs:
            obj.close()


_POSE_POOL: list[ModelPool] = []


def pose_pool() -> ModelPool:
    """This process's face-mesh pose estimators, one per thread using one at a time (a mediapipe
    graph takes one frame at a time); kept until :func:`close_pose_pool`."""
    if not _POSE_POOL:
        _POSE_POOL.append(ModelPool(PoseEstimator))
    return _POSE_POOL[0]


def close_pose_pool() -> None:
    if _POSE_POOL:
        _POSE_POOL.pop().close()


class ClipScorer:
    """The per-clip step of a render: :func:`score_clip` and :func:`decide` on a finished clip, with
    a pose estimator borrowed from ``poses``. A crop the crop stage refused (``crop_ok`` False) is
    dropped as ``crop_out_of_frame`` (value: its ``pad_fraction``, threshold: ``max_pad_fraction``), and
    a clip overlapping damaged packets as ``damaged_stream`` (value: the seconds affected), unless the
    mode is score-only. With ``thumbs_dir``, a small JPEG still of every clip (its middle
    frame, ``THUMB_SIZE`` pixels square) is written there as ``<clip_id>.jpg`` for the build report,
    kept or dropped (dropped clips have no mp4). Thread-safe."""

    def __init__(self, cfg: FilterConfig, crop_scale: float, poses: ModelPool | None = None, *,
                 max_pad_fraction: float = 0.0, thumbs_dir: str | Path | None = None) -> None:
        self.cfg, self.crop_scale, self.max_pad_fraction = cfg, crop_scale, float(max_pad_fraction)
        self.poses = poses if poses is not None else pose_pool()
        self.thumbs_dir = Path(thumbs_dir) if thumbs_dir is not None else None

    def __call__(self, spec: Any, frames: Any, audio: np.ndarray | None,
                 vocals: np.ndarray | None) -> dict[str, Any]:
        """``spec``: the clip's :class:`~shv_toolkit.stages.clips.ClipSpec`; ``frames``: its
        :class:`~shv_toolkit.stages.clips.ClipFrames`. Returns ``{"scores", "keep", "drop_reason",
        "drop_value", "drop_threshold"}``."""
        stats = FaceStats(spec.detected, spec.face_side_px, spec.other_face_ratio, crop_scale=self.crop_scale)
        with self.poses.borrow() as pose:
            scores = score_clip(frames, audio, vocals, stats, self.cfg, pose, grey=frames.grey)
        dec = decide(scores, self.cfg)
        if not spec.crop_ok and self.cfg.mode != "score-only":
            dec = Decision(False, CROP_OUT_OF_FRAME, float(spec.pad_fraction), self.max_pad_fraction)
        if spec.damaged_seconds > 0 and self.cfg.mode != "score-only":
            dec = Decision(False, DAMAGED_STREAM, float(spec.damaged_seconds), 0.0)
        if self.thumbs_dir is not None:
            write_thumbnail(frames[len(frames) // 2], self.thumbs_dir / f"{spec.clip_id}.jpg")
        return {"scores": scores, "keep": dec.keep, "drop_reason": dec.reason, "drop_value": dec.value,
                "drop_threshold": dec.threshold}


#: side in pixels of the JPEG stills :class:`ClipScorer` writes
THUMB_SIZE = 128
THUMB_QUALITY = 80


def encode_thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> bytes:
    """``rgb`` (an ``(H, W, 3)`` uint8 frame) resized to ``size`` x ``size`` as JPEG bytes."""
    small = cv2.resize(np.asarray(rgb), (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def write_thumbnail(rgb: np.ndarray, path: Path, size: int = THUMB_SIZE) -> None:
    """:func:`encode_thumbnail` of ``rgb`` written atomically to ``path``."""
    data = encode_thumbnail(rgb, size)
    with atomic_path(path, fsync=False) as tmp:  # a still, not data: no flush per clip
        tmp.write_bytes(data)
