"""BAS, Bailando's Beat Align Score (higher is better), for head motion against the driving audio.

Follows the BA definition of Bailando (Li et al., CVPR 2022; ``utils/beat_align_score.py``), with head
landmarks in place of body joints and a 25 Hz grid in place of 60 Hz:

* Music beats: the ground truth's (driving) audio; ``librosa.onset.onset_strength`` with
  ``hop_length = sr / fps`` (640 at 16 kHz and 25 fps, so one onset frame per video frame; audio whose
  rate is not a multiple of fps is resampled to the nearest one that is), then
  ``librosa.beat.beat_track(onset_envelope=..., sr, hop_length)`` with librosa's defaults
  (start_bpm 120, tightness 100, trimmed weak leading/trailing beats). Beat ``b`` is video frame ``b``.
  Beats at or after the last speed sample (frame ``T - 1``) are dropped, as Bailando truncates the beat
  track to the motion's length.
* Motion beats: landmarks of the generated clip (protocol's backend); "head" = the points that move
  with the skull and not with the mouth or eyelids: brows 17-26, nose 27-35 and the four eye corners
  36, 39, 42, 45 (23 points). Speed ``v[t]`` = mean over those points of the Euclidean displacement
  (pixels) from frame ``t`` to ``t + 1`` (``T - 1`` values, Bailando's ``kinetic_vel``); smoothed by
  ``scipy.ndimage.gaussian_filter1d(v, sigma=5)`` (same as Bailando's ``gaussian_filter`` on a 1-D
  array: reflect mode, truncate 4); motion beats = strict local minima,
  ``scipy.signal.argrelextrema(v, np.less)``. Frames without a face are filled by linear interpolation
  of the landmarks (count in ``extras``); a clip with fewer than 2 face frames raises
  :class:`MetricInputError`.
* BA = mean over music beats ``b`` of ``exp(-d_b^2 / (2 * 3^2))``, ``d_b`` = frames from ``b`` to the
  nearest motion beat (protocol ``bas_tolerance_frames`` = 3, ``bas_sigma_frames`` = 5). A protocol with
  ``bas_tolerance_ms`` (``singer-paper``: 50 ms, Bailando's 3 frames at 60 Hz) uses
  ``ms * fps / 1000`` frames instead (1.25 at 25 fps).
* Edge cases (Bailando's code would crash on both): no motion beat (monotone speed) -> every ``d_b`` is
  infinite and BA = 0; no music beat -> the clip has no BA (NaN in ``per_clip``, left out of the mean,
  listed in ``extras["clips_without_music_beats"]``).

The dataset value is the mean of per-clip BA.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from benchmark.metrics.base import Clip, Metric, MetricInputError, MetricResult, align, resize_frames
from benchmark.metrics.landmarks import (
    HEAD,
    LandmarkBackend,
    LandmarkMetric,
    backend_for,
    clip_landmarks,
    fill_missing,
)
from benchmark.protocol import Protocol, get_protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BASValue:
    ba: float  # NaN when the audio has no beat in the clip
    n_music_beats: int
    n_motion_beats: int
    filled_frames: int  # frames without a face, interpolated
    n_frames: int = 0  # frames of the clip


def music_beats(audio: np.ndarray, sample_rate: int, fps: float = 25.0) -> np.ndarray:
    """Beat positions (int frame indices on the ``fps`` grid) of mono ``audio``."""
    import librosa

    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise MetricInputError(f"BAS: audio must be mono 1-D, got shape {y.shape}")
    hop = sample_rate / fps
    sr = int(sample_rate)
    if abs(hop - round(hop)) > 1e-9:
        sr = int(round(hop)) * int(round(fps))
        if abs(sr / fps - round(sr / fps)) > 1e-9:
            raise MetricInputError(f"BAS: cannot build an integer hop for fps {fps}")
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=sr)
        hop = sr / fps
    hop_i = int(round(hop))
    envelope = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_i)
    _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=sr, hop_length=hop_i)
    return np.asarray(beats, dtype=np.int64)


def head_speed(landmarks: np.ndarray, points: np.ndarray = HEAD) -> np.ndarray:
    """(T - 1,) mean displacement of ``points`` between consecutive frames of (T, 68, 2) landmarks."""
    p = np.asarray(landmarks, dtype=np.float64)[:, points]
    return np.linalg.norm(np.diff(p, axis=0), axis=-1).mean(axis=1)


def motion_beats(speed: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Strict local minima of the Gaussian-smoothed speed curve."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    smooth = gaussian_filter1d(np.asarray(speed, dtype=np.float64), sigma)
    return argrelextrema(smooth, np.less)[0]


def beat_align(music: np.ndarray, motion: np.ndarray, tolerance: float = 3.0) -> float:
    """Mean over music beats of exp(-d^2 / (2 tolerance^2)), d = frames to the nearest motion beat."""
    music = np.asarray(music, dtype=np.float64)
    motion = np.asarray(motion, dtype=np.float64)
    if music.size == 0:
        return math.nan
    if motion.size == 0:
        return 0.0
    d = np.abs(music[:, None] - motion[None, :]).min(axis=1)
    return float(np.exp(-(d**2) / (2 * tolerance**2)).mean())


def bas_from_landmarks(
    landmarks: np.ndarray, beats: np.ndarray, sigma: float = 5.0, tolerance: float = 3.0
) -> BASValue:
    """BA of one clip from its (T, 68, 2) landmarks and its music beats (frame indices)."""
    try:
        lms, filled = fill_missing(landmarks)
    except ValueError:
        raise MetricInputError("BAS: no frame with a face") from None
    if len(lms) - filled < 2:
        raise MetricInputError("BAS: fewer than 2 frames with a face")
    speed = head_speed(lms)
    mb = motion_beats(speed, sigma)
    beats = np.asarray(beats)
    beats = beats[beats < len(speed)]
    return BASValue(beat_align(beats, mb, tolerance), int(beats.size), int(mb.size), filled, len(lms))


def bas_clip(
    generated: Clip,
    ground_truth: Clip | None = None,
    backend: LandmarkBackend | str | None = None,
    protocol: Protocol | str = "shv-v1",
) -> BASValue:
    """Pure per-clip BAS: head motion of ``generated`` against the beats of the ground truth's audio
    (``generated``'s own audio when no ground truth is given)."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    be = backend_for(backend, proto)
    audio_clip = ground_truth if ground_truth is not None else generated
    if ground_truth is not None:
        generated, audio_clip = align(generated, ground_truth, proto.max_length_mismatch)
    name = audio_clip.clip_id or audio_clip.path
    if audio_clip.audio is None or len(audio_clip.audio) == 0:
        raise MetricInputError(f"{name}: BAS needs the driving audio (the ground truth's audio track)")
    frames = generated.frames
    if proto.eval_size is not None:
        frames = resize_frames(frames, proto.eval_size)
    beats = music_beats(audio_clip.audio, audio_clip.sample_rate, generated.fps)
    try:
        return bas_from_landmarks(
            clip_landmarks(frames, be), beats, proto.bas_sigma_frames, proto.bas_tolerance
        )
    except MetricInputError as e:
        raise MetricInputError(f"{name}: {e}") from None


class BAS(LandmarkMetric, Metric):
    name = "bas"
    higher_is_better = True

    def __init__(self, protocol: Protocol | str | None = None, backend: LandmarkBackend | str | None = None) -> None:
        super().__init__(protocol, backend)
        self.per_clip: dict[str, BASValue]
        self.add_state("per_clip", {}, "union")

    def update(self, generated: Clip, ground_truth: Clip | None = None) -> float:
        value = bas_clip(generated, ground_truth, self.backend, self.protocol)
        key = self._new_key(ground_truth, generated)
        if math.isnan(value.ba):
            log.warning("BAS %s: no music beat in the driving audio; clip left out of the mean", key)
        self.per_clip[key] = value
        return value.ba

    def compute(self) -> MetricResult:
        keys = sorted(self.per_clip)
        vals = {k: self.per_clip[k].ba for k in keys}
        finite = [v for v in vals.values() if math.isfinite(v)]
        extras: dict = {
            "protocol": self.protocol.name,
            "sigma_frames": self.protocol.bas_sigma_frames,
            "tolerance_frames": self.protocol.bas_tolerance,
            "tolerance_ms": self.protocol.bas_tolerance * 1000.0 / self.protocol.fps,
            "head_points": "brows 17-26, nose 27-35, eye corners 36 39 42 45",
            "clips_without_music_beats": [k for k in keys if math.isnan(vals[k])],
            "clips_without_motion_beats": [k for k in keys if self.per_clip[k].n_motion_beats == 0],
            "filled_frames": sum(self.per_clip[k].filled_frames for k in keys),
            "frames_without_landmarks": {
                k: {"generated": self.per_clip[k].filled_frames, "frames": self.per_clip[k].n_frames} for k in keys
            },
        }
        if vals:
            extras.update(self.backend.describe())
        value = float(np.mean(finite)) if finite else None
        # a clip without a music beat has no BA: given to the metric, not scored (n_failed)
        return MetricResult(self.name, value, self.higher_is_better, len(vals), vals, extras,
                            n_failed=len(vals) - len(finite))
