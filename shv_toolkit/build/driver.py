"""Runs a build: schedules the analyse and render tasks on an engine, writes every completion marker,
resumes from them, then writes the manifests.

Only the driver writes markers, each once per finished task (a task that ran twice after a worker
died late is recorded once). A rerun skips finished sources, reuses plans and renders only the groups
without a marker, so a run killed at any moment ends with the manifests of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shv_toolkit import __version__
from shv_toolkit.build.layout import BuildLayout
from shv_toolkit.build.markers import Markers
from shv_toolkit.build.processor import close_processors
from shv_toolkit.build.report import write_report
from shv_toolkit.build.rows import bad_line_row, one_line, relative, source_row
from shv_toolkit.build.summary import BuildSummary, summarise
from shv_toolkit.build.units import (
    GROUP_CLIPS,
    AnalyseTask,
    ClipGroup,
    GroupResult,
    PlannedSource,
    RenderTask,
    SourceResult,
    TaskThreads,
)
from shv_toolkit.config import BuildConfig
from shv_toolkit.core.atomic import atomic_write_text, remove_partials
from shv_toolkit.core.engines import Engine, make_engine
from shv_toolkit.core.errors import UsageError
from shv_toolkit.inputs import InputLineError, SourceSpec, parse_url_list
from shv_toolkit.manifest import io as manifest_io
from shv_toolkit.manifest.split import assign_splits

log = logging.getLogger(__name__)


@dataclass
class _SourceState:
    spec: SourceSpec
    plan: PlannedSource
    pending: set[int]
    groups: dict[int, GroupResult] = field(default_factory=dict)


class Driver:
    """Schedules the task graph of a build on an engine and writes every completion marker."""

    def __init__(self, layout: BuildLayout, cfg: BuildConfig, engine: Engine, group_clips: int,
                 progress: bool) -> None:
        self.layout, self.cfg, self.engine = layout, cfg, engine
        self.markers = Markers(layout, cfg.config_hash())
        self.threads = TaskThreads.resolve(cfg.clips, engine.cores_per_task)
        out, shown = str(layout.out), progress and engine.in_process
        self.analyse_fn = AnalyseTask(cfg, out, self.threads, group_clips, progress=shown)
        self.render_fn = RenderTask(cfg, out, self.threads, progress=shown)
        if self.render_fn.resources.gpus and engine.gpus == 0:
            raise UsageError(f"vocals.device={cfg.vocals.device!r} but the {engine.describe()} has no GPU")
        self.results: dict[str, SourceResult] = {}
        self.states: dict[str, _SourceState] = {}
        self.meta: dict[int, tuple[str, str, int]] = {}
        self.backlog: deque[SourceSpec] = deque()
        self.tasks: Counter[str] = Counter()
        self.progress = progress
        self.bar_src = self.bar_clips = None
        self._specs: dict[str, SourceSpec] = {}

    def _submit(self, task: AnalyseTask | RenderTask, item: Any, key: str) -> int:
        res = task.resources
        return self.engine.submit(task, item, key=key, num_cpus=res.cpus, num_gpus=res.gpus)

    def run(self, todo: list[SourceSpec]) -> None:
        from tqdm import tqdm

        self._specs = {s.source_id: s for s in todo}
        self.bar_src = tqdm(total=len(todo), desc="sources", unit="src", disable=not self.progress)
        self.bar_clips = tqdm(total=0, desc="clips", unit="clip", disable=not self.progress)
        try:
            for spec in todo:
                plan = self.markers.plan(spec.source_id)
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
            tid = self._submit(self.analyse_fn, spec, f"analyse:{spec.source_id}")
            self.meta[tid] = ("analyse", spec.source_id, -1)
            self.tasks["analyse"] += 1

    def _on_analysed(self, sid: str, done) -> None:
        spec = self._specs[sid]
        if done.lost:
            row = source_row(spec)
            row["error"] = one_line(done.result)
            self._finish(sid, SourceResult(row, [], {}))
        elif isinstance(done.result, SourceResult):
            self._finish(sid, done.result)
        else:
            self.markers.save_plan(sid, done.result)
            self._schedule_groups(spec, done.result, resumed=False)

    def _schedule_groups(self, spec: SourceSpec, plan: PlannedSource, resumed: bool) -> None:
        sid = spec.source_id
        remove_partials(self.layout.clip_dir(sid))  # no task of this source runs now
        st = _SourceState(spec, plan, set())
        self.states[sid] = st
        n = len(plan.groups)
        self.bar_clips.total += sum(len(g) for g in plan.groups)
        self.bar_clips.refresh()
        # a local file as the list names it now (the out dir may have moved); downloads inside out
        src = spec.location if spec.kind == "file" else plan.source["local_path"]
        for gi, specs in enumerate(plan.groups):
            got = self.markers.group(sid, gi, plan.clip_ids(gi))
            if got is not None:
                st.groups[gi] = got
                self.bar_clips.update(len(specs))
                continue
            tid = self._submit(self.render_fn, ClipGroup(sid, gi, n, src, specs), f"render:{sid}:{gi}")
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
            res = GroupResult(sid, gi, [], {}, error=one_line(done.result))
        else:
            res = done.result
            if res.error is None:
                self.markers.save_group(sid, gi, res)
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
            row["local_path"] = relative(Path(st.spec.location).resolve(), self.layout.out.resolve())
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
                reasons = Counter(c["drop_reason"] for c in clips if c["drop_reason"])
                detail = ", ".join(f"{k} x{v}" for k, v in reasons.most_common()) or "no candidate clip"
                row["status"], row["error"] = "empty", f"no clip kept ({detail})"
            else:
                row["status"], row["error"] = "ok", None
        timings.pop("total", None)
        timings["total"] = sum(timings.values())
        self._finish(sid, SourceResult(row, clips, dict(timings)))
        if not errors:
            for p in self.layout.audio_caches(sid):
                p.unlink(missing_ok=True)
        remove_partials(self.layout.clip_dir(sid))

    def _finish(self, sid: str, res: SourceResult) -> None:
        self.markers.save_result(sid, res)
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

    cfg = cfg or BuildConfig()
    cfg.validate()
    if group_clips < 1:
        raise UsageError(f"group_clips must be >= 1, got {group_clips}")
    layout = BuildLayout(Path(out_dir).resolve())
    layout.make()
    t0 = time.perf_counter()
    config_hash = cfg.config_hash()
    atomic_write_text(layout.config_file, json.dumps(
        {"config_hash": config_hash, "toolkit_version": __version__, "config": cfg.to_dict()},
        indent=2, sort_keys=True))

    specs, bad_lines = parse_url_list(urls_file)
    for bl in bad_lines:
        log.error("input line %d rejected: %s (%s)", bl.line_no, bl.reason, bl.text[:200])

    markers = Markers(layout, config_hash)
    results: dict[str, SourceResult] = {}
    todo: list[SourceSpec] = []
    for spec in specs:
        res = markers.result(spec.source_id)
        if res is not None and not (retry_failed and res.source["status"] != "ok"):
            results[spec.source_id] = res
        else:
            todo.append(spec)
    if results:
        log.info("resuming: %d of %d sources already done", len(results), len(specs))

    eng = engine if engine is not None else make_engine("local")
    log.info("shv-build: %d source(s) to process on the %s", len(todo), eng.describe())
    stats0 = dict(eng.stats)
    try:
        driver = Driver(layout, cfg, eng, group_clips, progress)
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
    manifests = write_manifests(layout, ordered, bad_lines, cfg, config_hash)
    summary = summarise(ordered, bad_lines, manifests, time.perf_counter() - t0)
    summary.engine = eng.describe()
    summary.tasks = dict(driver.tasks)
    for k in ("retried", "lost"):
        if eng.stats.get(k, 0) - stats0.get(k, 0):
            summary.tasks[k] = eng.stats[k] - stats0.get(k, 0)
    summary.report = str(write_report(layout, cfg, config_hash, summary))  # refreshed by every run
    return summary


def write_manifests(layout: BuildLayout, results: list[SourceResult], bad_lines: list[InputLineError],
                    cfg: BuildConfig, config_hash: str) -> dict[str, str]:
    """The four Parquet tables of a build, with the source-level split of its ok sources."""
    ok_ids = [r.source["source_id"] for r in results if r.source["status"] == "ok"]
    splits = assign_splits(ok_ids, cfg.split)
    source_rows, clip_rows = [], []
    for r in results:
        split = splits.get(r.source["source_id"])
        source_rows.append(dict(r.source, split=split))
        clip_rows.extend(dict(c, split=split) for c in r.clips)
    source_rows.extend(bad_line_row(bl) for bl in bad_lines)
    paths = manifest_io.write_manifests(layout.out, source_rows, clip_rows, config_hash, __version__)
    return {k: str(v) for k, v in paths.items()}
