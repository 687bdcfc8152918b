"""The stages of shv-build applied to one source (:meth:`SourceProcessor.analyse`) and to one clip
group (:meth:`SourceProcessor.render_group`), in whatever process the engine runs them.

A process keeps one processor per build and config, and its models (the separator, the pose
estimators) across tasks, until :func:`close_processors`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from shv_toolkit.build.layout import BuildLayout
from shv_toolkit.build.rows import clip_row, fill_from_record, one_line, source_row
from shv_toolkit.build.units import (
    GROUP_CLIPS,
    MIX_RATE,
    ClipGroup,
    GroupResult,
    PlannedSource,
    SourceResult,
    TaskThreads,
    plan_groups,
)
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.core.errors import MediaError, ShvError, SourceError
from shv_toolkit.core.helpers import HelperCalls
from shv_toolkit.inputs import SourceSpec
from shv_toolkit.stages.clips import ClipSpec, plan_source, render_segment

log = logging.getLogger(__name__)


class SourceProcessor:
    """Runs the stages of shv-build in one process with ``threads`` inside each task."""

    def __init__(self, cfg: BuildConfig, layout: BuildLayout, threads: TaskThreads, progress: bool = True) -> None:
        self.cfg, self.layout, self.threads, self.progress = cfg, layout, threads, progress

    def separator(self):
        """This process's separator for the config (None without one), made on first use."""
        if self.cfg.vocals.backend == "none":
            return None  # without importing the separators (and torch)
        from shv_toolkit.stages.vocals import make_separator

        key = json.dumps([dataclasses.asdict(self.cfg.vocals), self.progress, self.threads.helpers], sort_keys=True)
        if key not in _SEPARATORS:
            _SEPARATORS[key] = make_separator(self.cfg.vocals, progress=self.progress, threads=self.threads.helpers)
        return _SEPARATORS[key]

    # ------------------------------------------------------------------ per-source task
    def analyse(self, spec: SourceSpec, group_clips: int = GROUP_CLIPS) -> PlannedSource | SourceResult:
        """Fetch, analyse and plan one source; a final failed :class:`SourceResult` if it fails."""
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        row = source_row(spec)
        try:
            specs = self._analyse(spec, row, timings)
        except (ShvError, OSError) as exc:
            log.warning("source %s (%s) failed: %s", spec.source_id, spec.location, one_line(exc))
            row["status"], row["error"] = "failed", one_line(exc)
            timings["total"] = time.perf_counter() - t_start
            return SourceResult(row, [], timings)
        groups = plan_groups(specs, group_clips)
        log.info("source %s: %d candidate clips in %d group(s)", spec.source_id, len(specs), len(groups))
        return PlannedSource(row, timings, groups, group_clips)

    def _analyse(self, spec: SourceSpec, row: dict[str, Any], timings: dict[str, float]) -> list[ClipSpec]:
        from shv_toolkit.stages.download import fetch_source

        cfg, layout = self.cfg, self.layout
        t = time.perf_counter()
        rec = fetch_source(spec, layout.downloads, cfg.download, progress=self.progress)
        timings["download"] = time.perf_counter() - t
        fill_from_record(row, rec, layout.out)
        src_path = Path(rec.local_path)

        helpers = self.threads.helpers
        rates = [cfg.clips.sample_rate] + ([MIX_RATE] if cfg.vocals.backend != "none" else [])
        video_damage, audio_damage = media.StreamDamage(), media.StreamDamage()
        for path in layout.audio_caches(spec.source_id):  # a killed analysis' caches: decode again, count damage
            path.unlink()
        # the audio caches the clip groups read: decoded on a helper thread during the analysis pass
        # (with helper threads), else after it; either way its errors come after the analysis' own
        try:
            with HelperCalls(1 if helpers > 0 else 0, "shv-audio") as audio_calls:
                if helpers > 0:
                    for rate in rates:
                        audio_calls.submit(self._audio, src_path, spec.source_id, rate,
                                           audio_damage if rate == rates[0] else None)
                specs = self._analyse_video(src_path, spec.source_id, row, timings, video_damage)
                t = time.perf_counter()
                if helpers == 0:
                    for rate in rates:
                        self._audio(src_path, spec.source_id, rate, audio_damage if rate == rates[0] else None)
                audio_calls.join()
                # the part of the audio decode the analysis did not hide (all of it without helpers)
                timings["audio"] = time.perf_counter() - t
        except BaseException:  # leaving the with block waited for the helper: its file is complete
            for rate in rates:  # a failed source keeps no audio cache
                layout.audio_cache(spec.source_id, rate).unlink(missing_ok=True)
            raise
        self._record_damage(row, specs, video_damage, audio_damage)
        return specs

    def _record_damage(self, row: dict[str, Any], specs: list[ClipSpec], video: media.StreamDamage,
                       audio: media.StreamDamage) -> None:
        """Damaged packets in the source row; clips overlapping them marked; the source fails when more
        than ``filters.max_damaged_share`` of it is damaged."""
        both = media.StreamDamage(video.n_packets + audio.n_packets, video.spans + audio.spans)
        row["n_damaged_packets_video"], row["n_damaged_packets_audio"] = video.n_packets, audio.n_packets
        row["damaged_seconds"] = both.seconds()
        if not both.n_packets:
            return
        fps, limit = self.cfg.clips.fps, self.cfg.filters.max_damaged_share
        duration = row["duration_s"] or max(c.end_frame for c in specs) / fps
        share = both.seconds() / duration if duration else 1.0
        log.warning("source %s: %d damaged video and %d damaged audio packet(s) skipped, %.2f s affected",
                    row["source_id"], video.n_packets, audio.n_packets, both.seconds())
        if limit is not None and share > limit:
            raise SourceError(f"damaged streams: {both.seconds():.1f} s of {duration:.1f} s affected "
                              f"({share:.0%} > filters.max_damaged_share {limit:.0%}; {video.n_packets} video, "
                              f"{audio.n_packets} audio packets)")
        for c in specs:
            c.damaged_seconds = both.within(c.start_frame / fps, c.end_frame / fps)

    def _analyse_video(self, src_path: Path, source_id: str, row: dict[str, Any],
                       timings: dict[str, float], damage: media.StreamDamage) -> list[ClipSpec]:
        from shv_toolkit.stages.analysis import analyse_source

        cfg, helpers = self.cfg, self.threads.helpers
        t = time.perf_counter()
        # the analysis decode feeds light consumers: FFmpeg's own threads, unless everything runs in one
        analysis = analyse_source(src_path, cfg.scenes, cfg.faces, fps=cfg.clips.fps, progress=self.progress,
                                  threads=helpers, decoder_threads=1 if helpers == 0 else 0, damage=damage)
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

    def _audio(self, src_path: Path, source_id: str, rate: int,
               damage: media.StreamDamage | None = None) -> np.ndarray:
        """The source's mono audio at ``rate`` (memory-mapped from ``work/<id>/audio-<rate>.npy``,
        decoded and cached first if missing; ``damage`` counts damaged packets of that decode).
        Raises MediaError without an audio stream."""
        path = self.layout.audio_cache(source_id, rate)
        if not path.is_file():
            audio = media.read_audio(src_path, sample_rate=rate, damage=damage)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
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
                        group.n_groups, one_line(exc))
            return GroupResult(group.source_id, group.index, [], timings, error=one_line(exc))

    def _render_group(self, group: ClipGroup, timings: dict[str, float]) -> GroupResult:
        from shv_toolkit.stages.filters import ClipScorer

        cfg, layout, specs = self.cfg, self.layout, group.specs
        src_path = Path(group.local_path)
        if not src_path.is_absolute():
            src_path = layout.out / src_path
        t = time.perf_counter()
        audio16 = self._audio(src_path, group.source_id, cfg.clips.sample_rate)
        separator = self.separator()
        vocals16 = None
        vocals_backend = "none"
        if separator is not None:
            from shv_toolkit.stages.vocals import separate_spans  # imports torch

            rate = int(getattr(separator, "input_rate", MIX_RATE))
            mix = self._audio(src_path, group.source_id, rate)
            vocals16 = separate_spans(separator, mix, rate, [(c.start_frame, c.end_frame) for c in specs],
                                      cfg.clips.fps, audio16.shape[0], group.source_id, cfg.clips.sample_rate)
            vocals_backend = separator.name
        timings["vocals"] = time.perf_counter() - t

        t = time.perf_counter()
        clip_dir = layout.clip_dir(group.source_id)
        pad_max = cfg.faces.max_pad_fraction if cfg.faces.out_of_frame == "pad" else 0.0
        scorer = ClipScorer(cfg.filters, cfg.faces.crop_scale, max_pad_fraction=pad_max,
                            thumbs_dir=layout.thumbs_dir(group.source_id))
        files = render_segment(src_path, specs, clip_dir, cfg.clips, audio16, vocals16,
                               on_clip=scorer, write_rejected=False, threads=self.threads.helpers,
                               decoder_threads=self.threads.decoder)
        rows = [clip_row(cfg, layout.out, cs, cf, clip_dir, vocals_backend)
                for cs, cf in zip(specs, files, strict=True)]
        timings["render"] = time.perf_counter() - t
        return GroupResult(group.source_id, group.index, rows, timings, vocals_backend)


# one processor per process, build and config; the separators shared by all of them
_PROCESSORS: dict[tuple[str, str, TaskThreads, bool], SourceProcessor] = {}
_SEPARATORS: dict[str, Any] = {}
_POOLS: list[tuple[int, Any]] = []  # OpenCV's thread count and BLAS's limits before this process's first processor


def processor(cfg: BuildConfig, out: str, threads: TaskThreads, progress: bool) -> SourceProcessor:
    """This process's processor for a build (made on first use)."""
    key = (cfg.config_hash() + json.dumps(cfg.vocals.device), out, threads, progress)
    proc = _PROCESSORS.get(key)
    if proc is None:
        if not _POOLS:
            import cv2
            from threadpoolctl import threadpool_limits

            # shv-build runs its own threads; OpenCV's and BLAS's pools on top of them cost CPU time that its
            # threads need (OpenBLAS's idle threads spin after each call; perf/RESULTS.md)
            _POOLS.append((cv2.getNumThreads(), threadpool_limits(1, user_api="blas")))
            cv2.setNumThreads(1)
        proc = _PROCESSORS[key] = SourceProcessor(cfg, BuildLayout(Path(out)), threads, progress=progress)
    return proc


def close_processors() -> None:
    """Release the models this process holds (the driver calls it after an in-process build)."""
    from shv_toolkit.stages.filters import close_pose_pool

    _PROCESSORS.clear()
    if _POOLS:
        import cv2

        cv2_threads, blas_limits = _POOLS.pop()
        cv2.setNumThreads(cv2_threads)
        blas_limits.restore_original_limits()
    close_pose_pool()
    _SEPARATORS.clear()
