"""shv-build orchestration: from a URL/path list to clips and Parquet manifests.

Work units (each runs wherever the engine puts it: in-process, a local worker process, a Ray node):

1. **analyse** -- one task per source: fetch (download or locate), ONE analysis decode (scene cut +
   face detection), tracking and clip planning, and one audio decode cached as
   ``work/<source_id>/audio-<rate>.npy`` for the next step. Its candidate clips are split into
   consecutive **clip groups** of at most ``group_clips`` clips.
2. **render** -- one task per clip group: vocal separation over the group's clip spans only, then
   render (one decode per run of nearby clips), score and filter, write the clips.

Completion markers, all written atomically by the driver when a task reports (never by workers):
``work/<id>/plan.json`` (analysis done: source row, timings, groups), ``work/<id>/groups/<i>.json``
(clip group done: its clip rows) and LAST ``work/<id>/result.json`` (the source is done). A rerun --
on any engine -- skips finished sources, reuses plans, and renders only the groups without a marker.
Clip ids are deterministic and clip files are written under temporary names and renamed, so a run
killed at any moment (or a worker killed mid-task and retried) ends with exactly the manifests of an
uninterrupted run. ``run_build`` then assigns the source-level split and writes the manifests.

Same results on every engine: work units do not depend on the engine or the worker count (groups
come from the plan alone), separation runs with fixed torch threads and seeded RNGs, and x264 runs
with ``threads=1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shv_toolkit import __version__
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError, ShvError, SourceError, UsageError
from shv_toolkit.core.helpers import HelperCalls
from shv_toolkit.inputs import InputLineError, SourceSpec, parse_url_list
from shv_toolkit.manifest import io as manifest_io
from shv_toolkit.manifest.schema import SCHEMA_VERSION, empty_row
from shv_toolkit.manifest.split import assign_splits
from shv_toolkit.stages.clips import ClipFrames, ClipSpec, plan_source, render_segment

if TYPE_CHECKING:
    from shv_toolkit.core.engines.base import Engine

log = logging.getLogger(__name__)

STAGES = ("download", "analysis", "tracking", "audio", "vocals", "render", "total")
#: default clips per render task: 24 clips = 48 s of video, 5-10 s of work on one core. The end of a
#: task waits for its last clips with the clip threads partly idle (about 0.2 s per task on 2 cores:
#: a 60 s source rendered 15 % faster in one group of 30 than in four of 8); a killed build redoes at
#: most one group per worker.
GROUP_CLIPS = 24
#: rate of the cached mix the separator reads (a separator may declare another ``input_rate``)
MIX_RATE = 44100
#: torch intra-op threads during separation, the same on every engine and worker count
SEPARATION_THREADS = 1


@dataclass
class BuildLayout:
    """Where a build writes. Everything lives under ``out``; manifests sit at its top."""

    out: Path

    @property
    def downloads(self) -> Path:
        return self.out / "downloads"

    @property
    def clips(self) -> Path:
        return self.out / "clips"

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def result_file(self, source_id: str) -> Path:
        return self.work / source_id / "result.json"

    def plan_file(self, source_id: str) -> Path:
        return self.work / source_id / "plan.json"

    def group_file(self, source_id: str, index: int) -> Path:
        return self.work / source_id / "groups" / f"{index:05d}.json"

    def audio_cache(self, source_id: str, rate: int) -> Path:
        return self.work / source_id / f"audio-{int(rate)}.npy"

    def make(self) -> None:
        for d in (self.out, self.downloads, self.clips, self.work, self.logs):
            d.mkdir(parents=True, exist_ok=True)


@dataclass
class SourceResult:
    """Everything one source contributes to the manifests (JSON-serialisable)."""

    source: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "clips": self.clips, "timings": self.timings}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SourceResult:
        return cls(d["source"], d["clips"], d.get("timings", {}))


@dataclass
class BuildSummary:
    n_sources: int
    n_ok: int
    n_failed: int
    n_input_errors: int
    clips_total: int
    clips_kept: int
    drop_reasons: dict[str, int]
    hours_kept: float
    stage_seconds: dict[str, float]
    failures: list[tuple[str, str]]
    manifests: dict[str, str]
    wall_seconds: float
    engine: str = ""
    tasks: dict[str, int] = field(default_factory=dict)  # tasks run this time: analyse, render, retried, lost

    def exit_code(self) -> int:
        return 0 if (self.n_failed == 0 and self.n_input_errors == 0) else 1

    def render(self) -> str:
        lines = [
            "shv-build summary",
            f"  sources: {self.n_ok} ok, {self.n_failed} failed/empty, {self.n_input_errors} bad input lines",
            f"  clips:   {self.clips_kept} kept of {self.clips_total} candidates "
            f"({self.hours_kept * 3600:.1f} s = {self.hours_kept:.4f} h kept)",
        ]
        for reason, n in sorted(self.drop_reasons.items(), key=lambda x: -x[1]):
            lines.append(f"    dropped {n:4d}  {reason}")
        lines.append("  time per stage (s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in self.stage_seconds.items()))
        if self.engine:
            lines.append(f"  engine: {self.engine}; tasks run: " + (", ".join(
                f"{k} {v}" for k, v in self.tasks.items()) or "none (all done before)"))
        lines.append(f"  wall time: {self.wall_seconds:.1f} s")
        for sid, err in self.failures:
            lines.append(f"  FAILED {sid}: {err}")
        for name, path in self.manifests.items():
            lines.append(f"  {name}: {path}")
        return "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    return msg[:500]


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _drop_reason_key(reason: str) -> str:
    """'sharpness=8.1<15.0' -> 'sharpness' (for the summary)."""
    for sep in ("=", "<", ">", ":"):
        reason = reason.split(sep)[0]
    return reason.strip()


def _empty_source_row(spec: SourceSpec) -> dict[str, Any]:
    return {
        # the entry as written in the list (a local path stays relative to the list, so manifests are portable)
        "source_id": spec.source_id, "url": spec.original or spec.location, "kind": spec.kind, "local_path": None,
        "title": None, "uploader": None, "channel": None, "duration_s": None, "fps": None,
        "width": None, "height": None, "has_audio": None, "color_transfer": None, "license": None,
        "webpage_url": None,
        "extractor": None, "status": "failed", "error": None, "n_scenes": 0, "n_scenes_too_short": 0,
        "n_clips_total": 0, "n_clips_kept": 0,
    }


# ----------------------------------------------------------------------------- work units (picklable)


def spec_to_json(cs: ClipSpec) -> dict[str, Any]:
    """A :class:`ClipSpec` as JSON (arrays keep dtype and exact values: floats round-trip by repr)."""
    d: dict[str, Any] = {}
    for f in dataclasses.fields(cs):
        v = getattr(cs, f.name)
        if isinstance(v, np.ndarray):
            d[f.name] = {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.reshape(-1).tolist()}
        elif isinstance(v, np.generic):
            d[f.name] = v.item()
        else:
            d[f.name] = v
    return d


def spec_from_json(d: dict[str, Any]) -> ClipSpec:
    kw = {}
    for k, v in d.items():
        if isinstance(v, dict) and "dtype" in v:
            kw[k] = np.asarray(v["data"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
        else:
            kw[k] = v
    return ClipSpec(**kw)


@dataclass
class PlannedSource:
    """Result of a source's analysis task: its manifest row so far, the stage timings and its clip
    groups (each a list of :func:`spec_to_json` dicts), saved as ``work/<id>/plan.json``."""

    source: dict[str, Any]
    timings: dict[str, float]
    groups: list[list[dict[str, Any]]]
    group_clips: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlannedSource:
        return cls(d["source"], d["timings"], d["groups"], int(d["group_clips"]))

    def clip_ids(self, index: int) -> list[str]:
        return [c["clip_id"] for c in self.groups[index]]


@dataclass
class ClipGroup:
    """One render task: consecutive candidate clips of one source."""

    source_id: str
    index: int
    n_groups: int
    local_path: str  # the source file: absolute, or relative to --out (downloads)
    specs: list[dict[str, Any]]


@dataclass
class GroupResult:
    """Result of a render task: clip rows in the group's order, or the one-line error."""

    source_id: str
    index: int
    clips: list[dict[str, Any]]
    timings: dict[str, float]
    vocals_backend: str = "none"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupResult:
        return cls(**d)


def plan_groups(specs: list[ClipSpec], max_clips: int) -> list[list[ClipSpec]]:
    """Split a source's candidate clips (in plan order: start frame, track) into consecutive groups
    of at most ``max_clips``, sized as evenly as possible (no tiny tail group)."""
    if max_clips < 1:
        raise ValueError(f"group size must be >= 1, got {max_clips}")
    n = len(specs)
    if n == 0:
        return []
    k = -(-n // max_clips)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [list(specs[bounds[i]:bounds[i + 1]]) for i in range(k)]


class _AudioWindow:
    """Read-only 1-D signal of ``length`` samples, zero except ``data`` at ``offset``: the vocals of
    one clip group without allocating the whole source (what :func:`render_segment` slices)."""

    def __init__(self, length: int, offset: int, data: np.ndarray) -> None:
        self.length, self.offset, self.data = int(length), int(offset), data
        self.shape = (self.length,)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("_AudioWindow supports slices only")
        start, stop, step = key.indices(self.length)
        if step != 1:
            raise ValueError("_AudioWindow supports step 1 only")
        out = np.zeros(max(0, stop - start), np.float32)
        a, b = max(start, self.offset), min(stop, self.offset + len(self.data))
        if b > a:
            out[a - start:b - start] = self.data[a - self.offset:b - self.offset]
        return out


@contextlib.contextmanager
def _deterministic_separation(seed: int) -> Iterator[None]:
    """Same vocals on every engine: fixed torch intra-op threads (float reductions can depend on
    the thread count) and seeded RNGs (demucs's random shifts use ``random``)."""
    import random

    import torch

    threads = torch.get_num_threads()
    state = random.getstate()
    torch.set_num_threads(SEPARATION_THREADS)
    random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(state)
        torch.set_num_threads(threads)


class SourceProcessor:
    """Runs the stages of shv-build in one process. Holds per-process models (separator, pose).

    :meth:`analyse` is the per-source task (fetch, one analysis decode, planning, audio decode),
    :meth:`render_group` the per-clip-group task (vocals for the group's spans, render, filters).
    """

    def __init__(self, cfg: BuildConfig, layout: BuildLayout, progress: bool = True) -> None:
        self.cfg = cfg
        self.layout = layout
        self.progress = progress

    # models are created lazily, once per process (a worker keeps them across tasks and builds)
    def separator(self):
        if self.cfg.vocals.backend == "none":
            return None  # without importing the separators (and torch)
        from shv_toolkit.stages.vocals import make_separator

        threads = self.cfg.helper_threads()
        key = "separator:" + json.dumps([dataclasses.asdict(self.cfg.vocals), self.progress, threads], sort_keys=True)
        if key not in _MODELS:
            _MODELS[key] = make_separator(self.cfg.vocals, progress=self.progress, threads=threads)
        return _MODELS[key]

    def pose(self) -> _ModelPool:
        """Face-mesh pose estimators, one per clip thread using it at a time (a mediapipe graph
        takes one frame at a time)."""
        if "pose" not in _MODELS:
            from shv_toolkit.stages.filters import PoseEstimator

            _MODELS["pose"] = _ModelPool(PoseEstimator)
        return _MODELS["pose"]

    def close(self) -> None:
        """Models are shared by the processors of a process: see :func:`close_processors`."""

    # ------------------------------------------------------------------ per-source task
    def analyse(self, spec: SourceSpec, group_clips: int = GROUP_CLIPS) -> PlannedSource | SourceResult:
        """Fetch, analyse and plan one source; a final failed :class:`SourceResult` if it fails."""
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        row = _empty_source_row(spec)
        try:
            specs = self._analyse(spec, row, timings)
        except (ShvError, OSError) as exc:
            log.warning("source %s (%s) failed: %s", spec.source_id, spec.location, _one_line(exc))
            row["status"], row["error"] = "failed", _one_line(exc)
            timings["total"] = time.perf_counter() - t_start
            return SourceResult(row, [], timings)
        groups = [[spec_to_json(s) for s in g] for g in plan_groups(specs, group_clips)]
        log.info("source %s: %d candidate clips in %d group(s)", spec.source_id, len(specs), len(groups))
        return PlannedSource(row, timings, groups, group_clips)

    def _analyse(self, spec: SourceSpec, row: dict[str, Any], timings: dict[str, float]) -> list[ClipSpec]:
        from shv_toolkit.stages.download import fetch_source

        cfg, layout = self.cfg, self.layout
        t = time.perf_counter()
        rec = fetch_source(spec, layout.downloads, cfg.download, progress=self.progress)
        timings["download"] = time.perf_counter() - t
        src_path = Path(rec.local_path)
        row.update(
            local_path=_rel(src_path.resolve(), layout.out.resolve()),
            title=rec.title, uploader=rec.uploader, channel=rec.channel, duration_s=rec.duration_s,
            fps=rec.fps, width=rec.width, height=rec.height, has_audio=rec.has_audio,
            color_transfer=rec.color_transfer, license=rec.license, webpage_url=rec.webpage_url,
            extractor=rec.extractor,
        )

        helpers = cfg.helper_threads()
        rates = [cfg.clips.sample_rate] + ([MIX_RATE] if cfg.vocals.backend != "none" else [])
        # the audio caches the clip groups read: decoded on a helper thread during the analysis pass
        # (with helper threads), else after it; either way its errors come after the analysis' own
        try:
            with HelperCalls(1 if helpers > 0 else 0, "shv-audio") as audio_calls:
                if helpers > 0:
                    for rate in rates:
                        audio_calls.submit(self._audio, src_path, spec.source_id, rate)
                specs = self._analyse_video(src_path, spec.source_id, row, timings, helpers)
                t = time.perf_counter()
                if helpers == 0:
                    for rate in rates:
                        self._audio(src_path, spec.source_id, rate)
                audio_calls.join()
                # the part of the audio decode the analysis did not hide (all of it without helpers)
                timings["audio"] = time.perf_counter() - t
        except BaseException:  # leaving the with block waited for the helper: its file is complete
            for rate in rates:  # a failed source keeps no audio cache
                self.layout.audio_cache(spec.source_id, rate).unlink(missing_ok=True)
            raise
        return specs

    def _analyse_video(self, src_path: Path, source_id: str, row: dict[str, Any], timings: dict[str, float],
                       helpers: int) -> list[ClipSpec]:
        from shv_toolkit.stages.analysis import analyse_source

        cfg = self.cfg
        t = time.perf_counter()
        # the analysis decode feeds light consumers: FFmpeg's own threads, unless everything runs in one
        analysis = analyse_source(src_path, cfg.scenes, cfg.faces, fps=cfg.clips.fps, progress=self.progress,
                                  threads=helpers, decoder_threads=1 if helpers == 0 else 0)
        timings["analysis"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_source(analysis, source_id, cfg.faces, cfg.clips)
        timings["tracking"] = time.perf_counter() - t
        row["n_scenes"] = len(analysis.scenes)
        row["n_scenes_too_short"] = len(plan.dropped_scenes)
        if not plan.kept_scenes:
            raise SourceError(
                f"shorter than one clip: no scene of at least {cfg.clips.clip_seconds:g} s "
                f"({len(analysis.scenes)} scenes, {analysis.n_frames} frames at {cfg.clips.fps:g} fps)"
            )
        n_tracks = sum(len(ts) for ts in plan.tracks.values())
        if n_tracks == 0:
            raise SourceError(f"no face found in {len(plan.kept_scenes)} usable scene(s)")
        if not plan.specs:
            raise SourceError(f"no face track of at least {cfg.clips.clip_seconds:g} s ({n_tracks} tracks)")
        return plan.specs

    def _audio(self, src_path: Path, source_id: str, rate: int) -> np.ndarray:
        """The source's mono audio at ``rate`` (memory-mapped from ``work/<id>/audio-<rate>.npy``,
        decoded and cached first if missing). Raises MediaError without an audio stream."""
        path = self.layout.audio_cache(source_id, rate)
        if not path.is_file():
            audio = media.read_audio(src_path, sample_rate=rate)
            with manifest_io.atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(audio, dtype=np.float32), allow_pickle=False)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MediaError(f"unreadable audio cache {path.name}: {exc}") from exc

    # ------------------------------------------------------------------ per-group task
    def render_group(self, group: ClipGroup) -> GroupResult:
        """Vocals over the group's spans, then render + score + write its clips."""
        timings: dict[str, float] = {}
        try:
            return self._render_group(group, timings)
        except (ShvError, OSError) as exc:
            log.warning("source %s clip group %d/%d failed: %s", group.source_id, group.index + 1,
                        group.n_groups, _one_line(exc))
            return GroupResult(group.source_id, group.index, [], timings, error=_one_line(exc))

    def _render_group(self, group: ClipGroup, timings: dict[str, float]) -> GroupResult:
        from shv_toolkit.stages.filters import FaceStats, decide, score_clip

        cfg, layout = self.cfg, self.layout
        specs = [spec_from_json(d) for d in group.specs]
        src_path = Path(group.local_path)
        if not src_path.is_absolute():
            src_path = layout.out / src_path
        t = time.perf_counter()
        audio16 = self._audio(src_path, group.source_id, cfg.clips.sample_rate)
        separator = self.separator()
        vocals16 = None
        vocals_backend = "none"
        if separator is not None:
            rate = int(getattr(separator, "input_rate", MIX_RATE))
            mix = self._audio(src_path, group.source_id, rate)
            vocals16 = self._separate_spans(separator, mix, rate, specs, audio16.shape[0], group.source_id)
            vocals_backend = separator.name
        timings["vocals"] = time.perf_counter() - t

        t = time.perf_counter()
        clip_dir = layout.clips / group.source_id
        fcfg = cfg.filters
        poses = self.pose()

        def on_clip(cs, frames: ClipFrames, audio: np.ndarray | None, vocals: np.ndarray | None) -> dict:
            stats = FaceStats(cs.detected, cs.face_side_px, cs.other_face_ratio, crop_scale=cfg.faces.crop_scale)
            with poses.borrow() as pose:
                scores = score_clip(frames, audio, vocals, stats, fcfg, pose, grey=frames.grey)
            keep, reason = decide(scores, fcfg)
            if not cs.crop_ok and fcfg.mode != "score-only":
                keep, reason = False, cs.crop_reason
            return {"scores": scores, "keep": keep, "drop_reason": reason}

        files = render_segment(src_path, specs, clip_dir, cfg.clips, audio16, vocals16,
                               on_clip=on_clip, write_rejected=False, threads=cfg.helper_threads(),
                               decoder_threads=cfg.decoder_threads())
        rows = [self._clip_row(group.source_id, cs, cf, clip_dir, vocals_backend)
                for cs, cf in zip(specs, files, strict=True)]
        timings["render"] = time.perf_counter() - t
        return GroupResult(group.source_id, group.index, rows, timings, vocals_backend)

    def _separate_spans(self, separator, mix: np.ndarray, rate: int, specs: list[ClipSpec], n16: int,
                        source_id: str) -> _AudioWindow:
        """Separate vocals only over the spans of the group's clips; silence elsewhere."""
        sr, fps = self.cfg.clips.sample_rate, self.cfg.clips.fps
        spans = _merge_spans([(c.start_frame, c.end_frame) for c in specs])
        w0 = min(n16, int(round(spans[0][0] / fps * sr)))
        w1 = min(n16, int(round(spans[-1][1] / fps * sr)) + sr)
        buf = np.zeros(max(0, w1 - w0), np.float32)
        for f0, f1 in spans:
            t0, t1 = f0 / fps, f1 / fps
            seg = np.asarray(mix[int(round(t0 * rate)):int(round(t1 * rate))], dtype=np.float32)
            if seg.size == 0:
                continue
            seed = int(hashlib.sha256(f"{source_id}:{f0}:{f1}".encode()).hexdigest()[:8], 16)
            with _deterministic_separation(seed):
                v = np.asarray(separator.separate(seg[None, :], rate), dtype=np.float32).reshape(-1)
            i0 = int(round(t0 * sr)) - w0
            n = max(0, min(v.shape[0], len(buf) - i0))
            buf[i0:i0 + n] = v[:n]
        return _AudioWindow(n16, w0, buf)

    def _clip_row(self, source_id: str, cs, cf, clip_dir: Path, vocals_backend: str) -> dict[str, Any]:
        cfg = self.cfg
        out = self.layout.out
        extra = cf.extra or {}
        boxes = np.asarray(cs.boxes, dtype=float)
        row = {
            "clip_id": cs.clip_id, "source_id": source_id, "scene_index": int(cs.scene_index),
            "track_id": int(cs.track_id), "start_frame": int(cs.start_frame), "end_frame": int(cs.end_frame),
            "start_s": cs.start_frame / cfg.clips.fps, "end_s": cs.end_frame / cfg.clips.fps,
            "fps": float(cfg.clips.fps), "n_frames": int(cs.end_frame - cs.start_frame),
            "width": int(cfg.clips.size), "height": int(cfg.clips.size),
            "video_path": _rel(clip_dir / cf.video_path, out) if cf.video_path else None,
            "audio_path": _rel(clip_dir / cf.audio_path, out) if cf.audio_path else None,
            "vocals_path": _rel(clip_dir / cf.vocals_path, out) if cf.vocals_path else None,
            "crop_cx": float(np.median(boxes[:, 0])), "crop_cy": float(np.median(boxes[:, 1])),
            "crop_side": float(np.median(boxes[:, 2])), "crop_scale": float(cfg.faces.crop_scale),
            "pad_fraction": float(cs.pad_fraction), "keep": bool(extra.get("keep", False)),
            "drop_reason": extra.get("drop_reason"), "vocals_backend": vocals_backend,
        }
        for k, v in (extra.get("scores") or {}).items():
            row[f"score_{k}"] = None if v is None else float(v)
        return row


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _ModelPool:
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
        for obj in objs:
            obj.close()


# one SourceProcessor per process and build; models (separator, pose) shared by all of them
_PROCESSORS: dict[tuple[str, str, bool], SourceProcessor] = {}
_MODELS: dict[str, Any] = {}


_CV2_THREADS: list[int] = []  # OpenCV's thread count before the first processor of this process


def _processor(cfg: BuildConfig, out: str, progress: bool) -> SourceProcessor:
    key = (cfg.config_hash() + json.dumps([cfg.vocals.device, cfg.clips.threads, cfg.clips.decoder_threads]), out,
           progress)
    proc = _PROCESSORS.get(key)
    if proc is None:
        if not _CV2_THREADS:
            import cv2

            # shv-build runs its own threads (clip threads, worker processes); OpenCV's pool on top of
            # them only wakes threads for small images: 1.1-1.5 s of system time per minute of 360p video
            _CV2_THREADS.append(cv2.getNumThreads())
            cv2.setNumThreads(1)
        proc = _PROCESSORS[key] = SourceProcessor(cfg, BuildLayout(Path(out)), progress=progress)
    return proc


def close_processors() -> None:
    """Release the models this process holds (the driver calls it after an in-process build)."""
    _PROCESSORS.clear()
    if _CV2_THREADS:
        import cv2

        cv2.setNumThreads(_CV2_THREADS.pop())
    pose = _MODELS.pop("pose", None)
    if pose is not None:
        pose.close()
    _MODELS.clear()


@dataclass(frozen=True)
class AnalyseTask:
    """Picklable per-source task: ``AnalyseTask(cfg, out)(spec)``."""

    cfg: BuildConfig
    out: str
    group_clips: int = GROUP_CLIPS
    progress: bool = False

    def __call__(self, spec: SourceSpec) -> PlannedSource | SourceResult:
        return _processor(self.cfg, self.out, self.progress).analyse(spec, self.group_clips)


@dataclass(frozen=True)
class RenderTask:
    """Picklable per-clip-group task: ``RenderTask(cfg, out)(group)``."""

    cfg: BuildConfig
    out: str
    progress: bool = False

    def __call__(self, group: ClipGroup) -> GroupResult:
        return _processor(self.cfg, self.out, self.progress).render_group(group)


# ----------------------------------------------------------------------------- completion markers


def _load_marker(path: Path, config_hash: str) -> dict[str, Any] | None:
    if not manifest_io.is_done(path):
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("unreadable marker %s: its work will be done again", path)
        return None
    if data.get("config_hash") != config_hash:
        return None
    return data


def _load_result(path: Path, config_hash: str) -> SourceResult | None:
    data = _load_marker(path, config_hash)
    return None if data is None else SourceResult.from_json(data["result"])


def _save_result(path: Path, result: SourceResult, config_hash: str) -> None:
    manifest_io.mark_done(path, {"config_hash": config_hash, "toolkit_version": __version__,
                                 "result": result.to_json()})


def _load_plan(path: Path, config_hash: str) -> PlannedSource | None:
    data = _load_marker(path, config_hash)
    return None if data is None else PlannedSource.from_json(data["plan"])


def _load_group(path: Path, config_hash: str, clip_ids: list[str]) -> GroupResult | None:
    data = _load_marker(path, config_hash)
    if data is None or data.get("clip_ids") != clip_ids:
        return None
    return GroupResult.from_json(data["group"])


def _remove_partials(clip_dir: Path) -> None:
    """Temporary files of interrupted writes (killed runs or workers). Call only while no task of
    the source is running: before its groups are scheduled and after they all reported."""
    if clip_dir.exists():
        for stale in clip_dir.glob(".*.partial*"):
            stale.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the driver


@dataclass
class _SourceState:
    spec: SourceSpec
    plan: PlannedSource
    pending: set[int]
    groups: dict[int, GroupResult] = field(default_factory=dict)


class _Driver:
    """Schedules the task graph of a build on an engine and writes every completion marker.

    Only the driver writes markers (``plan.json``, ``groups/<i>.json``, ``result.json``), each once
    per finished task: a task that ran twice (a retry after a worker died late) is recorded once.
    """

    def __init__(self, layout: BuildLayout, cfg: BuildConfig, engine: Engine, group_clips: int,
                 progress: bool) -> None:
        self.layout, self.cfg, self.engine = layout, cfg, engine
        self.config_hash = cfg.config_hash()
        in_process = bool(getattr(engine, "in_process", False))
        out = str(layout.out)
        # helper threads of a task, resolved once for every task. Tasks still ask the engine for one CPU:
        # asking for more than a node has would leave them unschedulable.
        from shv_toolkit.core.engines.local import LocalEngine

        local = isinstance(engine, LocalEngine)
        self.helper_threads = cfg.helper_threads(engine.workers, local=local)
        tcfg = dataclasses.replace(cfg, clips=dataclasses.replace(
            cfg.clips, threads=self.helper_threads, decoder_threads=cfg.decoder_threads(engine.workers, local=local)))
        self.analyse_fn = AnalyseTask(tcfg, out, group_clips, progress=progress and in_process)
        self.render_fn = RenderTask(tcfg, out, progress=progress and in_process)
        # separation on a GPU: render tasks ask for one (Ray places them on GPU nodes)
        self.gpu = 1.0 if str(cfg.vocals.device).startswith("cuda") and cfg.vocals.backend != "none" else 0.0
        if self.gpu and engine.gpus == 0:
            raise UsageError(f"vocals.device={cfg.vocals.device!r} but the {engine.describe()} has no GPU")
        self.results: dict[str, SourceResult] = {}
        self.states: dict[str, _SourceState] = {}
        self.meta: dict[int, tuple[str, str, int]] = {}
        self.backlog: deque[SourceSpec] = deque()
        self.tasks: Counter[str] = Counter()
        self.progress = progress
        self.bar_src = self.bar_clips = None
        self._specs: dict[str, SourceSpec] = {}

    def run(self, todo: list[SourceSpec]) -> None:
        from tqdm import tqdm

        self._specs = {s.source_id: s for s in todo}

        self.bar_src = tqdm(total=len(todo), desc="sources", unit="src", disable=not self.progress)
        self.bar_clips = tqdm(total=0, desc="clips", unit="clip", disable=not self.progress)
        try:
            for spec in todo:
                plan = _load_plan(self.layout.plan_file(spec.source_id), self.config_hash)
                if plan is None:
                    self.backlog.append(spec)
                else:
                    self._schedule_groups(spec, plan, resumed=True)
            self._feed()
            for done in self.engine.completed():
                kind, sid, gi = self.meta.pop(done.task_id)
                if kind == "analyse":
                    self._on_analysed(sid, done)
                else:
                    self._on_group(sid, gi, done)
                self._feed()
        finally:
            self.bar_src.close()
            self.bar_clips.close()

    def _feed(self) -> None:
        """Submit analyses while fewer than two tasks per worker are queued: clip groups of planned
        sources go first, so a long list streams through instead of analysing everything first."""
        while self.backlog and self.engine.pending() < 2 * self.engine.capacity:
            spec = self.backlog.popleft()
            tid = self.engine.submit(self.analyse_fn, spec, key=f"analyse:{spec.source_id}", num_cpus=1)
            self.meta[tid] = ("analyse", spec.source_id, -1)
            self.tasks["analyse"] += 1

    def _on_analysed(self, sid: str, done) -> None:
        spec = self._specs[sid]
        if done.lost:
            row = _empty_source_row(spec)
            row["error"] = _one_line(done.result)
            self._finish(sid, SourceResult(row, [], {}))
        elif isinstance(done.result, SourceResult):
            self._finish(sid, done.result)
        else:
            plan: PlannedSource = done.result
            manifest_io.mark_done(self.layout.plan_file(sid), {
                "config_hash": self.config_hash, "toolkit_version": __version__, "plan": plan.to_json()})
            self._schedule_groups(spec, plan, resumed=False)

    def _schedule_groups(self, spec: SourceSpec, plan: PlannedSource, resumed: bool) -> None:
        sid = spec.source_id
        _remove_partials(self.layout.clips / sid)
        st = _SourceState(spec, plan, set())
        self.states[sid] = st
        n = len(plan.groups)
        self.bar_clips.total += sum(len(g) for g in plan.groups)
        self.bar_clips.refresh()
        # a local file as the list names it now (the out dir may have moved); downloads inside out
        src = spec.location if spec.kind == "file" else plan.source["local_path"]
        for gi, specs in enumerate(plan.groups):
            got = _load_group(self.layout.group_file(sid, gi), self.config_hash, plan.clip_ids(gi))
            if got is not None:
                st.groups[gi] = got
                self.bar_clips.update(len(specs))
                continue
            group = ClipGroup(sid, gi, n, src, specs)
            tid = self.engine.submit(self.render_fn, group, key=f"render:{sid}:{gi}", num_cpus=1,
                                     num_gpus=self.gpu)
            self.meta[tid] = ("render", sid, gi)
            self.tasks["render"] += 1
            st.pending.add(gi)
        if resumed:
            log.info("source %s: resuming from its plan, %d of %d clip group(s) to do", sid,
                     len(st.pending), n)
        if not st.pending:
            self._finalize(sid)

    def _on_group(self, sid: str, gi: int, done) -> None:
        st = self.states[sid]
        if done.lost:
            res = GroupResult(sid, gi, [], {}, error=_one_line(done.result))
        else:
            res = done.result
            if res.error is None:
                manifest_io.mark_done(self.layout.group_file(sid, gi), {
                    "config_hash": self.config_hash, "toolkit_version": __version__,
                    "clip_ids": st.plan.clip_ids(gi), "group": res.to_json()})
        st.groups[gi] = res
        st.pending.discard(gi)
        self.bar_clips.update(len(st.plan.groups[gi]))
        if not st.pending:
            self._finalize(sid)

    def _finalize(self, sid: str) -> None:
        """All groups of a source reported: its result.json (the source's completion marker)."""
        st = self.states.pop(sid)
        row = dict(st.plan.source)
        if st.spec.kind == "file":  # relative to out as it is now (a resumed out dir may have moved)
            row["local_path"] = _rel(Path(st.spec.location).resolve(), self.layout.out.resolve())
        timings = Counter(st.plan.timings)
        for g in st.groups.values():
            timings.update(g.timings)
        errors = [(gi, g.error) for gi, g in sorted(st.groups.items()) if g.error]
        if errors:
            gi, err = errors[0]
            row["status"] = "failed"
            row["error"] = f"clip group {gi + 1} of {len(st.plan.groups)}: {err}"
            clips: list[dict[str, Any]] = []
            log.warning("source %s (%s) failed: %s", sid, row["url"], row["error"])
        else:
            clips = [c for gi in range(len(st.plan.groups)) for c in st.groups[gi].clips]
            kept = sum(1 for c in clips if c["keep"])
            row["n_clips_total"], row["n_clips_kept"] = len(clips), kept
            if kept == 0:
                reasons = Counter(_drop_reason_key(c["drop_reason"]) for c in clips if c["drop_reason"])
                detail = ", ".join(f"{k} x{v}" for k, v in reasons.most_common()) or "no candidate clip"
                row["status"], row["error"] = "empty", f"no clip kept ({detail})"
            else:
                row["status"], row["error"] = "ok", None
        timings.pop("total", None)
        timings["total"] = sum(timings.values())
        self._finish(sid, SourceResult(row, clips, dict(timings)))
        if not errors:
            for p in self.layout.work.joinpath(sid).glob("audio-*.npy"):
                p.unlink(missing_ok=True)
        _remove_partials(self.layout.clips / sid)

    def _finish(self, sid: str, res: SourceResult) -> None:
        _save_result(self.layout.result_file(sid), res, self.config_hash)
        self.results[sid] = res
        self.bar_src.set_postfix_str(f"{sid} {res.source['status']}")
        self.bar_src.update(1)


def run_build(
    urls_file: str | Path,
    out_dir: str | Path,
    cfg: BuildConfig | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    engine: Engine | None = None,
    group_clips: int = GROUP_CLIPS,
) -> BuildSummary:
    """Build (or resume) a dataset from ``urls_file`` into ``out_dir``; returns the summary.

    ``engine``: where tasks run (:func:`shv_toolkit.core.engines.make_engine`; the caller closes it);
    default: in-process. ``group_clips``: clips per render task for sources planned in this run
    (a planned source keeps the groups of its ``plan.json``).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from shv_toolkit.core.engines.local import LocalEngine

    cfg = cfg or BuildConfig()
    cfg.validate()
    layout = BuildLayout(Path(out_dir).resolve())
    layout.make()
    t0 = time.perf_counter()
    config_hash = cfg.config_hash()
    (layout.out / "build_config.json").write_text(
        json.dumps({"config_hash": config_hash, "toolkit_version": __version__, "config": cfg.to_dict()},
                   indent=2, sort_keys=True))

    specs, bad_lines = parse_url_list(urls_file)
    for bl in bad_lines:
        log.error("input line %d rejected: %s (%s)", bl.line_no, bl.reason, bl.text[:200])

    results: dict[str, SourceResult] = {}
    todo: list[SourceSpec] = []
    for spec in specs:
        res = _load_result(layout.result_file(spec.source_id), config_hash)
        if res is not None and not (retry_failed and res.source["status"] != "ok"):
            results[spec.source_id] = res
        else:
            todo.append(spec)
    if results:
        log.info("resuming: %d of %d sources already done", len(results), len(specs))

    eng = engine if engine is not None else LocalEngine(workers=1)
    log.info("shv-build: %d source(s) to process on the %s", len(todo), eng.describe())
    stats0 = dict(eng.stats)
    try:
        driver = _Driver(layout, cfg, eng, group_clips, progress)
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():
            driver.run(todo)
    finally:
        if eng.pending():  # an error or an interrupt in the driver: stop what is still running
            eng.cancel()
        if engine is None:
            eng.close()
        close_processors()
    results.update(driver.results)

    ordered = [results[s.source_id] for s in specs if s.source_id in results]
    manifests = _write_manifests(layout, ordered, bad_lines, cfg, config_hash)
    summary = _summarise(ordered, bad_lines, manifests, time.perf_counter() - t0)
    summary.engine = eng.describe()
    summary.tasks = dict(driver.tasks)
    for k in ("retried", "lost"):
        if eng.stats.get(k, 0) - stats0.get(k, 0):
            summary.tasks[k] = eng.stats[k] - stats0.get(k, 0)
    return summary


def _write_manifests(layout: BuildLayout, results: list[SourceResult], bad_lines: list[InputLineError],
                     cfg: BuildConfig, config_hash: str) -> dict[str, str]:
    ok_ids = [r.source["source_id"] for r in results if r.source["status"] == "ok"]
    splits = assign_splits(ok_ids, cfg.split)
    source_rows, clip_rows = [], []
    for r in results:
        sid = r.source["source_id"]
        srow = dict(r.source, split=splits.get(sid))
        source_rows.append(srow)
        for c in r.clips:
            clip_rows.append(dict(c, split=splits.get(sid)))
    for bl in bad_lines:
        source_rows.append(empty_row(
            "sources", source_id=f"line-{bl.line_no:05d}", url=bl.text, kind="invalid", status="failed",
            error=f"input line {bl.line_no}: {bl.reason}", n_scenes=0, n_scenes_too_short=0,
            n_clips_total=0, n_clips_kept=0, split=None,
        ))
    paths = manifest_io.write_manifests(layout.out, source_rows, clip_rows, config_hash, __version__)
    return {k: str(v) for k, v in paths.items()}


def _summarise(results: list[SourceResult], bad_lines: list[InputLineError], manifests: dict[str, str],
               wall: float) -> BuildSummary:
    drops: Counter[str] = Counter()
    total = kept = 0
    kept_seconds = 0.0
    stage: Counter[str] = Counter()
    failures = []
    for r in results:
        for k, v in r.timings.items():
            stage[k] += v
        if r.source["status"] != "ok":
            failures.append((r.source["source_id"], f"{r.source['url']}: {r.source['error']}"))
        for c in r.clips:
            total += 1
            if c["keep"]:
                kept += 1
                kept_seconds += c["end_s"] - c["start_s"]
            else:
                drops[_drop_reason_key(c["drop_reason"] or "unknown")] += 1
    for bl in bad_lines:
        failures.append((f"line {bl.line_no}", f"{bl.text[:80]}: {bl.reason}"))
    n_ok = sum(1 for r in results if r.source["status"] == "ok")
    return BuildSummary(
        n_sources=len(results), n_ok=n_ok, n_failed=len(results) - n_ok, n_input_errors=len(bad_lines),
        clips_total=total, clips_kept=kept, drop_reasons=dict(drops), hours_kept=kept_seconds / 3600,
        stage_seconds={k: round(stage[k], 2) for k in STAGES if k in stage}, failures=failures,
        manifests=manifests, wall_seconds=wall,
    )


__all__ = ["BuildLayout", "BuildSummary", "ClipGroup", "GroupResult", "PlannedSource", "SourceProcessor",
           "SourceResult", "plan_groups", "run_build", "SCHEMA_VERSION"]
