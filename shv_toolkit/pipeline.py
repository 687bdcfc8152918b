"""shv-build orchestration: from a URL/path list to clips and Parquet manifests.

Unit of work: one source. ``process_source`` runs every stage for one source and writes its
result (source row + candidate clip rows) to ``work/<source_id>/result.json`` LAST and atomically:
that file is the source's completion marker. ``run_build`` skips sources whose marker exists for
the same config hash, then assigns the source-level split and writes the manifests. A run killed at
any moment therefore resumes to exactly the manifests of an uninterrupted run: clip ids are
deterministic, clip files are written under temporary names and renamed, and a half-processed
source is simply processed again (rewriting the same bytes).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shv_toolkit import __version__, media
from shv_toolkit.config import BuildConfig
from shv_toolkit.errors import ShvError, SourceError
from shv_toolkit.inputs import InputLineError, SourceSpec, parse_url_list
from shv_toolkit.manifest import io as manifest_io
from shv_toolkit.manifest.schema import SCHEMA_VERSION, empty_row
from shv_toolkit.manifest.split import assign_splits

log = logging.getLogger(__name__)

STAGES = ("download", "analysis", "tracking", "vocals", "render", "total")


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


class SourceProcessor:
    """Runs every stage for one source. Holds per-process models (face detector, separator)."""

    def __init__(self, cfg: BuildConfig, layout: BuildLayout, progress: bool = True) -> None:
        self.cfg = cfg
        self.layout = layout
        self.progress = progress
        self._separator = None
        self._separator_ready = False
        self._pose = None

    # models are created lazily and once per process
    def separator(self):
        if not self._separator_ready:
            from shv_toolkit.stages.vocals import make_separator

            self._separator = make_separator(self.cfg.vocals)
            self._separator_ready = True
        return self._separator

    def pose(self):
        if self._pose is None:
            from shv_toolkit.stages.filters import PoseEstimator

            self._pose = PoseEstimator()
        return self._pose

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __call__(self, spec: SourceSpec) -> SourceResult:
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        row = self._empty_source_row(spec)
        try:
            clips = self._process(spec, row, timings)
            kept = sum(1 for c in clips if c["keep"])
            row["n_clips_total"], row["n_clips_kept"] = len(clips), kept
            if kept == 0:
                reasons = Counter(_drop_reason_key(c["drop_reason"]) for c in clips if c["drop_reason"])
                detail = ", ".join(f"{k} x{v}" for k, v in reasons.most_common()) or "no candidate clip"
                row["status"] = "empty"
                row["error"] = f"no clip kept ({detail})"
            else:
                row["status"] = "ok"
        except (ShvError, OSError) as exc:
            log.warning("source %s (%s) failed: %s", spec.source_id, spec.location, _one_line(exc))
            row["status"], row["error"] = "failed", _one_line(exc)
            clips = []
        timings["total"] = time.perf_counter() - t_start
        return SourceResult(row, clips, timings)

    def _empty_source_row(self, spec: SourceSpec) -> dict[str, Any]:
        return {
            "source_id": spec.source_id, "url": spec.location, "kind": spec.kind, "local_path": None,
            "title": None, "uploader": None, "channel": None, "duration_s": None, "fps": None,
            "width": None, "height": None, "has_audio": None, "license": None, "webpage_url": None,
            "extractor": None, "status": "failed", "error": None, "n_scenes": 0, "n_scenes_too_short": 0,
            "n_clips_total": 0, "n_clips_kept": 0,
        }

    def _process(self, spec: SourceSpec, row: dict[str, Any], timings: dict[str, float]) -> list[dict]:
        from shv_toolkit.stages.analysis import analyse_source
        from shv_toolkit.stages.clips import plan_source, render_segment
        from shv_toolkit.stages.download import fetch_source
        from shv_toolkit.stages.filters import FaceStats, decide, score_clip

        cfg, layout = self.cfg, self.layout
        t = time.perf_counter()
        rec = fetch_source(spec, layout.downloads, cfg.download, progress=self.progress)
        timings["download"] = time.perf_counter() - t
        src_path = Path(rec.local_path)
        row.update(
            local_path=_rel(src_path.resolve(), layout.out.resolve()) if spec.kind == "url" else str(src_path),
            title=rec.title, uploader=rec.uploader, channel=rec.channel, duration_s=rec.duration_s,
            fps=rec.fps, width=rec.width, height=rec.height, has_audio=rec.has_audio, license=rec.license,
            webpage_url=rec.webpage_url, extractor=rec.extractor,
        )

        t = time.perf_counter()
        analysis = analyse_source(src_path, cfg.scenes, cfg.faces, fps=cfg.clips.fps, progress=self.progress)
        timings["analysis"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_source(analysis, spec.source_id, cfg.faces, cfg.clips)
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

        t = time.perf_counter()
        sr = cfg.clips.sample_rate
        audio16 = media.read_audio(src_path, sample_rate=sr)
        separator = self.separator()
        vocals16 = None
        vocals_backend = "none"
        if separator is not None:
            vocals16 = self._separate_spans(separator, src_path, plan.specs, audio16.shape[0])
            vocals_backend = separator.name
        timings["vocals"] = time.perf_counter() - t

        t = time.perf_counter()
        clip_dir = layout.clips / spec.source_id
        if clip_dir.exists():
            for stale in clip_dir.glob(".*.partial.*"):
                stale.unlink(missing_ok=True)
        fcfg = cfg.filters
        pose = self.pose()

        def on_clip(cs, frames: np.ndarray, audio: np.ndarray | None, vocals: np.ndarray | None) -> dict:
            stats = FaceStats(cs.detected, cs.face_side_px, cs.other_face_ratio, crop_scale=cfg.faces.crop_scale)
            scores = score_clip(frames, audio, vocals, stats, fcfg, pose)
            keep, reason = decide(scores, fcfg)
            if not cs.crop_ok and fcfg.mode != "score-only":
                keep, reason = False, cs.crop_reason
            return {"scores": scores, "keep": keep, "drop_reason": reason}

        files = render_segment(src_path, plan.specs, clip_dir, cfg.clips, audio16, vocals16,
                               on_clip=on_clip, write_rejected=False)
        rows = [self._clip_row(spec, cs, cf, clip_dir, vocals_backend)
                for cs, cf in zip(plan.specs, files, strict=True)]
        timings["render"] = time.perf_counter() - t
        return rows

    def _separate_spans(self, separator, src_path: Path, specs: list, n16: int) -> np.ndarray:
        """Separate vocals only over the spans that become candidate clips; silence elsewhere."""
        sr, fps = self.cfg.clips.sample_rate, self.cfg.clips.fps
        rate = getattr(separator, "input_rate", 44100)
        mix = media.read_audio(src_path, sample_rate=rate)
        vocals = np.zeros(n16, np.float32)
        for f0, f1 in _merge_spans([(c.start_frame, c.end_frame) for c in specs]):
            t0, t1 = f0 / fps, f1 / fps
            seg = mix[int(round(t0 * rate)):int(round(t1 * rate))]
            if seg.size == 0:
                continue
            v = np.asarray(separator.separate(seg[None, :], rate), dtype=np.float32).reshape(-1)
            i0 = int(round(t0 * sr))
            n = min(v.shape[0], n16 - i0)
            vocals[i0:i0 + n] = v[:n]
        return vocals

    def _clip_row(self, spec: SourceSpec, cs, cf, clip_dir: Path, vocals_backend: str) -> dict[str, Any]:
        cfg = self.cfg
        out = self.layout.out
        extra = cf.extra or {}
        boxes = np.asarray(cs.boxes, dtype=float)
        row = {
            "clip_id": cs.clip_id, "source_id": spec.source_id, "scene_index": int(cs.scene_index),
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


def _load_result(path: Path, config_hash: str) -> SourceResult | None:
    if not manifest_io.is_done(path):
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("unreadable result %s: the source will be processed again", path)
        return None
    if data.get("config_hash") != config_hash:
        return None
    return SourceResult.from_json(data["result"])


def _save_result(path: Path, result: SourceResult, config_hash: str) -> None:
    manifest_io.mark_done(path, {"config_hash": config_hash, "toolkit_version": __version__,
                                 "result": result.to_json()})


Engine = Callable[[Callable[[SourceSpec], SourceResult], list[SourceSpec]], Iterable[SourceResult]]


def sequential_engine(fn: Callable[[SourceSpec], SourceResult], specs: list[SourceSpec]) -> Iterable[SourceResult]:
    for s in specs:
        yield fn(s)


def run_build(
    urls_file: str | Path,
    out_dir: str | Path,
    cfg: BuildConfig | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    engine: Engine | None = None,
    processor_factory: Callable[[], Callable[[SourceSpec], SourceResult]] | None = None,
) -> BuildSummary:
    """Build (or resume) a dataset from ``urls_file`` into ``out_dir``; returns the summary."""
    from tqdm import tqdm

    cfg = cfg or BuildConfig()
    layout = BuildLayout(Path(out_dir))
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

    processor = processor_factory() if processor_factory else SourceProcessor(cfg, layout, progress=progress)
    run = engine or sequential_engine
    bar = tqdm(total=len(todo), desc="sources", unit="src", disable=not progress)
    try:
        for res in run(processor, todo):
            sid = res.source["source_id"]
            _save_result(layout.result_file(sid), res, config_hash)
            results[sid] = res
            bar.set_postfix_str(f"{sid} {res.source['status']}")
            bar.update(1)
    finally:
        bar.close()
        if hasattr(processor, "close"):
            processor.close()

    ordered = [results[s.source_id] for s in specs if s.source_id in results]
    manifests = _write_manifests(layout, ordered, bad_lines, cfg, config_hash)
    return _summarise(ordered, bad_lines, manifests, time.perf_counter() - t0)


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


__all__ = ["BuildLayout", "BuildSummary", "SourceProcessor", "SourceResult", "run_build", "SCHEMA_VERSION"]
