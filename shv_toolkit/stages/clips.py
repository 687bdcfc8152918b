"""Clip planning (2.0 s = 50-frame windows over face tracks) and rendering (one decode per segment).

Rendering decodes the source frames covering a group of clips once at full resolution and crops and
resizes every frame in memory: from the frame's own 4:2:0 planes when it has usable ones
(:func:`shv_toolkit.stages.crop.apply_crop_i420`; x264 then spends 5 % less time and writes 5 % fewer
bytes than on the same crops through RGB, ``perf/crop_encode_cost.py``), else through RGB
(:func:`~shv_toolkit.stages.crop.apply_crop`). Each clip is encoded as H.264 yuv420p mp4 tagged with
the source's matrix, with an AAC track (PyAV, in-process, x264 ``threads=1`` so output is
byte-identical across runs); the 16 kHz mono wav is written beside it, and every mp4 is verified.
Finished clips are scored, encoded and written on background threads while decoding goes on
(``ClipConfig.threads``); each clip keeps its own single-threaded encoder, so the files do not
depend on the thread count.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shv_toolkit.config import ClipConfig, FaceConfig
from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError
from shv_toolkit.core.helpers import HelperCalls
from shv_toolkit.stages.analysis import SourceAnalysis
from shv_toolkit.stages.crop import apply_crop, apply_crop_i420, crop_boxes, crop_decision, face_side_px
from shv_toolkit.stages.faces import Track, smooth_track, track_faces
from shv_toolkit.stages.scenes import Scene, usable_scenes

log = logging.getLogger(__name__)

#: fixed namespace of clip ids: ``uuid5(CLIP_NAMESPACE, f"{source_id}:{track_id}:{start}:{end}")``
CLIP_NAMESPACE = uuid.UUID("5d1e4b8a-7c1f-5a8e-9a55-2f3c0c5e5148")


def clip_frames(cfg: ClipConfig) -> int:
    """Frames per clip: ``round(fps * clip_seconds)`` (50 at the defaults)."""
    n = int(round(cfg.fps * cfg.clip_seconds))
    if n < 1:
        raise ValueError(f"clip of {cfg.clip_seconds} s at {cfg.fps} fps has no frames")
    return n


def clip_id_for(source_id: str, track_id: int, start: int, end: int) -> str:
    """Deterministic clip id (uuid5 string). ``track_id`` is part of it because two subjects of
    one scene give two candidate clips over the same frames."""
    return str(uuid.uuid5(CLIP_NAMESPACE, f"{source_id}:{track_id}:{start}:{end}"))


@dataclass
class ClipSpec:
    """One candidate clip: grid frames ``[start_frame, end_frame)`` of one track.

    Per-frame arrays have one row per clip frame: ``boxes`` ``(n, 3)`` crop ``(cx, cy, side)`` in
    source pixels; ``detected`` ``(n,)`` face present (:attr:`Track.present`); ``face_side_px``
    ``(n,)`` smoothed face box side in source pixels; ``other_face_ratio`` ``(n,)`` largest other
    face area / this face's area. ``pad_fraction``: max share of crop pixels outside the frame;
    ``crop_ok``/``crop_reason``: the out-of-frame verdict (:func:`crop.crop_decision`).
    """

    clip_id: str
    source_id: str
    scene_index: int
    track_id: int
    start_frame: int
    end_frame: int
    boxes: np.ndarray
    detected: np.ndarray
    face_side_px: np.ndarray
    other_face_ratio: np.ndarray
    pad_fraction: float
    crop_ok: bool = True
    crop_reason: str | None = None
    damaged_seconds: float = 0.0  # seconds of the clip lying in damaged packets of the source (media.StreamDamage)

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class ClipFiles:
    """What :func:`render_segment` wrote for one clip (paths relative to ``out_dir``; None when
    not written: no audio for wavs, or the clip was not kept and ``write_rejected`` is False)."""

    clip_id: str
    video_path: str | None  # "<clip_id>.mp4"
    audio_path: str | None  # "<clip_id>.wav"
    vocals_path: str | None  # "<clip_id>.vocals.wav"
    n_frames: int
    duration: float
    size: int
    extra: dict[str, Any] = field(default_factory=dict)  # what on_clip returned


def plan_clips(
    source_id: str,
    scene_index: int,
    track_id: int,
    track: Track,
    boxes: np.ndarray,
    cfg: ClipConfig,
    *,
    frame_w: int,
    frame_h: int,
    face_cfg: FaceConfig,
) -> list[ClipSpec]:
    """Consecutive non-overlapping ``clip_frames(cfg)``-frame clips from the track's first frame;
    the remainder shorter than one clip at the end of the track is not used. ``boxes`` are
    :func:`crop.crop_boxes` of the (smoothed) ``track``; ``frame_w``/``frame_h`` the source size."""
    n = clip_frames(cfg)
    if len(boxes) != len(track):
        raise ValueError(f"{len(boxes)} crop boxes for a track of {len(track)} frames")
    present = track.present
    sides = face_side_px(boxes, face_cfg)
    specs: list[ClipSpec] = []
    for i in range(0, len(track) - n + 1, n):
        start = int(track.frames[i])
        sl = slice(i, i + n)
        dec = crop_decision(boxes[sl], frame_w, frame_h, face_cfg)
        specs.append(
            ClipSpec(
                clip_id=clip_id_for(source_id, track_id, start, start + n),
                source_id=source_id,
                scene_index=scene_index,
                track_id=track_id,
                start_frame=start,
                end_frame=start + n,
                boxes=np.array(boxes[sl], dtype=np.float64),
                detected=present[sl].copy(),
                face_side_px=sides[sl].copy(),
                other_face_ratio=np.array(track.other_face_ratio[sl], dtype=np.float64),
                pad_fraction=dec.pad_fraction,
                crop_ok=dec.ok,
                crop_reason=dec.reason,
            )
        )
    return specs


@dataclass
class SourcePlan:
    """Planning result for one analysed source."""

    kept_scenes: list[tuple[int, Scene]]  # (scene_index, scene) at least one clip long
    dropped_scenes: list[tuple[int, Scene]]  # shorter than one clip (reason "scene_too_short")
    tracks: dict[int, list[Track]]  # scene_index -> smoothed tracks
    specs: list[ClipSpec]  # all candidate clips, ordered by start frame then track id


def plan_source(
    analysis: SourceAnalysis, source_id: str, face_cfg: FaceConfig, clip_cfg: ClipConfig
) -> SourcePlan:
    """Scenes -> tracks -> smoothed tracks -> crop boxes -> candidate clips for one source."""
    n = clip_frames(clip_cfg)
    indexed = list(enumerate(analysis.scenes))
    kept, _ = usable_scenes(analysis.scenes, n)
    kept_set = set(kept)
    kept_i = [(i, s) for i, s in indexed if s in kept_set]
    dropped_i = [(i, s) for i, s in indexed if s not in kept_set]
    tracks: dict[int, list[Track]] = {}
    specs: list[ClipSpec] = []
    for si, scene in kept_i:
        ts = [smooth_track(t, face_cfg) for t in track_faces(analysis.detections, scene, face_cfg)]
        tracks[si] = ts
        for t in ts:
            if len(t) < n:
                continue
            boxes = crop_boxes(t, analysis.source_width, analysis.source_height, face_cfg)
            specs += plan_clips(
                source_id, si, t.track_id, t, boxes, clip_cfg,
                frame_w=analysis.source_width, frame_h=analysis.source_height, face_cfg=face_cfg,
            )
    specs.sort(key=lambda s: (s.start_frame, s.track_id))
    return SourcePlan(kept_i, dropped_i, tracks, specs)


class ClipFrames(Sequence):
    """A rendered clip as :func:`render_segment` hands it to ``on_clip``, before it is encoded.

    ``len(clip)`` frames; ``clip[i]`` is frame ``i`` as ``(S, S, 3)`` uint8 RGB, converted from the I420
    crop on access (scoring needs RGB only for the head-pose frames); ``np.asarray(clip)`` converts
    them all. ``grey``: ``(n, S, S)`` full-range grey levels (:func:`media.i420_grey`), ``i420``: the
    ``(n, 3S/2, S)`` crops that are encoded, ``matrix``: their H.273 matrix (2: BT.601).
    """

    def __init__(self, i420: np.ndarray, matrix: int) -> None:
        self.i420 = i420
        self.matrix = int(matrix)
        self._grey: np.ndarray | None = None
        self._rf = media.VideoReformatter()

    def __len__(self) -> int:
        return len(self.i420)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return media.i420_to_rgb(self.i420[i], self.matrix, self._rf)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack([self[i] for i in range(len(self))])
        return out if dtype is None else out.astype(dtype)

    @property
    def grey(self) -> np.ndarray:
        if self._grey is None:
            self._grey = media.i420_grey(self.i420)
        return self._grey


OnClip = Callable[[ClipSpec, ClipFrames, np.ndarray | None, np.ndarray | None], dict | None]


def _audio_slice(audio: np.ndarray, start: int, n: int, fps: float, sr: int) -> np.ndarray:
    """Samples of grid frames ``[start, start + n)``, zero-padded where the track is shorter."""
    i0 = int(round(start * sr / fps))
    m = int(round(n * sr / fps))
    out = np.zeros(m, np.float32)
    seg = np.asarray(audio[i0:i0 + m], dtype=np.float32)
    out[: len(seg)] = seg
    return out


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def verify_clip(path: str | os.PathLike, cfg: ClipConfig) -> media.MediaInfo:
    """Raise :class:`MediaError` unless ``path`` has exactly ``clip_frames(cfg)`` frames at
    ``cfg.fps``, a duration of ``clip_seconds`` within one frame, and ``size x size`` pixels."""
    n = clip_frames(cfg)
    info = media.probe(path, read_rotation=False)  # the writer stores no rotation
    problems = []
    if info.n_frames != n:
        problems.append(f"{info.n_frames} frames, expected {n}")
    if info.fps is None or abs(info.fps - cfg.fps) > 1e-3:
        problems.append(f"{info.fps} fps, expected {cfg.fps}")
    if abs(info.duration - n / cfg.fps) > 1.0 / cfg.fps + 1e-6:
        problems.append(f"duration {info.duration:.4f} s, expected {n / cfg.fps:.4f} s")
    if (info.width, info.height) != (cfg.size, cfg.size):
        problems.append(f"size {info.width}x{info.height}, expected {cfg.size}x{cfg.size}")
    if problems:
        raise MediaError(f"written clip {Path(path).name} is wrong: " + "; ".join(problems))
    return info


def _runs(specs: Sequence[ClipSpec], max_gap: int) -> list[list[ClipSpec]]:
    """Group specs (sorted by start) into runs decoded in one pass: a gap of at most ``max_gap``
    frames between one spec's end and the next one's start is decoded through instead of seeking."""
    runs: list[list[ClipSpec]] = []
    end = None
    for s in sorted(specs, key=lambda s: (s.start_frame, s.track_id, s.clip_id)):
        if runs and end is not None and s.start_frame <= end + max_gap:
            runs[-1].append(s)
            end = max(end, s.end_frame)
        else:
            runs.append([s])
            end = s.end_frame
    return runs


def render_segment(
    source_path: str | os.PathLike,
    specs: Sequence[ClipSpec],
    out_dir: str | os.PathLike,
    cfg: ClipConfig,
    audio16k: np.ndarray | None,
    vocals16k: np.ndarray | None = None,
    on_clip: OnClip | None = None,
    write_rejected: bool = True,
    threads: int = 0,
    decoder_threads: int = 0,
) -> list[ClipFiles]:
    """Render ``specs`` of one source into ``out_dir`` with one decode per run of nearby clips.

    ``audio16k``/``vocals16k``: the whole source's mono float32 audio at ``cfg.sample_rate``
    (time 0 = grid frame 0), or None (no audio track: mp4 without audio, no wav; no vocals stem).
    Per clip writes ``<clip_id>.mp4`` (H.264 yuv420p ``size x size`` at ``fps``, AAC mono at
    ``mp4_audio_rate``), ``<clip_id>.wav`` and ``<clip_id>.vocals.wav`` (16-bit PCM), each
    atomically. Audio shorter than the video is zero-padded to exactly ``n_frames / fps`` seconds.

    ``on_clip(spec, frames, audio, vocals)`` gets the crops as :class:`ClipFrames` (RGB frames on
    access, grey levels, the I420 images) and the clip's audio arrays before anything is written;
    its returned dict is stored in :attr:`ClipFiles.extra`. If that dict has ``keep`` False and ``write_rejected`` is False, no
    file is written for the clip. Every written mp4 is checked with :func:`verify_clip`.

    ``threads``: 0 finishes each clip (``on_clip``, encode, write, verify) in the calling thread;
    N > 0 finishes up to N clips at once in background threads while this thread goes on decoding and
    cropping (x264 and mediapipe release the GIL); the last clip, with nothing left to decode, is
    finished in the calling thread beside the helpers' last ones. ``on_clip`` must then be safe to
    call from several threads. The files are identical for every value: each clip has its own single-threaded encoder.
    ``decoder_threads``: see :func:`media.iter_frames`.
    Returns one :class:`ClipFiles` per spec, in the order of ``specs``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = clip_frames(cfg)
    sr = int(cfg.sample_rate)
    for s in specs:
        if s.n_frames != n or len(s.boxes) != n:
            raise ValueError(f"clip {s.clip_id} has {s.n_frames} frames, expected {n}")
    finished: dict[str, Any] = {}  # clip id -> ClipFiles, or its Future on a helper thread
    with HelperCalls(threads, "shv-clip") as finisher:
        for run in _runs(specs, max_gap=int(round(2 * cfg.fps))):
            r0 = min(s.start_frame for s in run)
            r1 = max(s.end_frame for s in run)
            by_start: dict[int, list[ClipSpec]] = {}
            for s in run:
                by_start.setdefault(s.start_frame, []).append(s)
            active: list[_ClipBuffer] = []
            for k, sf in media.iter_source_frames(source_path, fps=cfg.fps, start=r0 / cfg.fps,
                                                     end=r1 / cfg.fps, decoder_threads=decoder_threads):
                planes = sf.yuv420()
                matrix = sf.colorspace if planes is not None else 2
                for s in by_start.pop(k, ()):
                    active.append(_ClipBuffer(s, np.empty((n, cfg.size * 3 // 2, cfg.size), np.uint8), matrix))
                rgb = None
                still = []
                for c in active:
                    i = k - c.spec.start_frame
                    if planes is not None and matrix == c.matrix:
                        apply_crop_i420(planes, c.spec.boxes[i], cfg.size, out=c.frames[i])
                    else:  # no usable planes, or (a stream changing format mid-clip) another matrix
                        rgb = sf.rgb() if rgb is None else rgb
                        c.frames[i] = media.rgb_to_i420(apply_crop(rgb, c.spec.boxes[i], cfg.size), c.matrix)
                    if k == c.spec.end_frame - 1:
                        args = (c, out_dir, cfg, audio16k, vocals16k, on_clip, write_rejected, sr)
                        if len(finished) == len(specs) - 1:
                            # the last clip: this thread has nothing left to decode, so it finishes the clip
                            # itself beside the helpers' last ones instead of queueing it and idling
                            finished[c.spec.clip_id] = _finish_clip(*args)
                        else:
                            finished[c.spec.clip_id] = finisher.submit(_finish_clip, *args)
                    else:
                        still.append(c)
                active = still
            missing = [s.clip_id for s in run if s.clip_id not in finished]
            if missing:
                raise MediaError(
                    f"{Path(source_path).name}: decoding ended before frame {r1} "
                    f"({len(missing)} clip(s) incomplete)"
                )
        finisher.join()
    return [HelperCalls.value(finished[s.clip_id]) for s in specs]


@dataclass
class _ClipBuffer:
    """A clip being cut: its I420 frames ``(n, 3S/2, S)`` and their H.273 matrix (2: BT.601)."""

    spec: ClipSpec
    frames: np.ndarray
    matrix: int


def _finish_clip(
    clip: _ClipBuffer,
    out_dir: Path,
    cfg: ClipConfig,
    audio: np.ndarray | None,
    vocals: np.ndarray | None,
    on_clip: OnClip | None,
    write_rejected: bool,
    sr: int,
) -> ClipFiles:
    spec, frames = clip.spec, clip.frames
    n = len(frames)
    a = None if audio is None else _audio_slice(audio, spec.start_frame, n, cfg.fps, sr)
    v = None if vocals is None else _audio_slice(vocals, spec.start_frame, n, cfg.fps, sr)
    scores = {}
    if on_clip is not None:
        scores = on_clip(spec, ClipFrames(frames, clip.matrix), a, v) or {}
    files = ClipFiles(spec.clip_id, None, None, None, n, n / cfg.fps, cfg.size, dict(scores))
    if not write_rejected and scores.get("keep", True) is False:
        return files
    mp4 = out_dir / f"{spec.clip_id}.mp4"
    rate = int(cfg.mp4_audio_rate) if a is not None else None
    with media.VideoWriter(mp4, cfg.fps, cfg.size, cfg.size, crf=cfg.crf, preset=cfg.preset,
                           audio_rate=rate, colorspace=clip.matrix) as wr:
        for f in frames:
            wr.write_i420(f)
        if a is not None and rate is not None:
            wr.write_audio(_resample(a, sr, rate))
    try:
        verify_clip(mp4, cfg)
    except MediaError:
        mp4.unlink(missing_ok=True)
        raise
    files.video_path = mp4.name
    if a is not None:
        files.audio_path = media.write_wav(out_dir / f"{spec.clip_id}.wav", a, sr).name
    if v is not None:
        files.vocals_path = media.write_wav(out_dir / f"{spec.clip_id}.vocals.wav", v, sr).name
    return files
