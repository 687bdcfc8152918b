"""The bench runner behind ``shv-bench``: one method over every clip of a test manifest, all metrics.

For each test clip (manifest order, ``limit`` first ones):

1. the ground-truth clip is decoded at the protocol's fps (its own audio track, 16 kHz mono, is the audio
   the metrics use, exactly as ``shv-metrics`` would); its first frame is the method's reference image;
2. the method gets a :class:`~benchmark.methods.base.ClipInput` with the driving audio (the clip's wav:
   ``driving_audio="mix"``, the song as the SINGER paper drives its model, or ``"vocals"``: the separated
   vocals stem when the manifest has one) and returns frames or a video path; frames are written to
   ``OUT/videos/<row>/<clip_id>.mp4`` with the driving audio (:func:`shv_toolkit.core.media.write_video`);
   the clips that need generating (not cached) are handed to the method ``batch_clips`` at a time
   (:meth:`~benchmark.methods.base.Method.generate_batch`; ``shv-bench --batch-clips``); a batch that raises
   is generated again one clip at a time, so a bad clip fails only itself;
3. the generated video is decoded at the protocol's fps, aligned to the ground truth
   (:func:`benchmark.metrics.base.align`) and every requested metric is updated on a fresh one-clip shard.

Per-clip cache (resume): each clip's outcome is written atomically to
``OUT/cache/<dataset>/<protocol>/<row>/<clip_id>.json``: the generated video, errors, and for every metric
its one-clip *state* (the states the metric declares with ``Metric.add_state``, encoded as JSON with base64
arrays by :func:`benchmark.core.encode_state`, no pickle)
and per-clip values. A rerun reuses a clip's metric when its fingerprint still matches (ground-truth
video SHA-256, method settings and per-clip input, driving audio, protocol fingerprint, metric options
and extractor weight hashes), so an interrupted run computes only what is missing; adding a metric
computes only that metric. Cached errors are kept (``retry_errors=True`` recomputes them); a metric that
was *missing* (weights not installed) is never cached. FVD window features are cached by the SHA-256 of
the exact frames they came from (``OUT/cache/features``), so the ground-truth side is computed once per
clip for all methods.

The row: the per-clip shards are merged in manifest order with ``Metric.merge`` into one metric object
per metric, whose ``results()`` give the row's values; this equals a single pass over all clips (the
tests check it against :func:`benchmark.evaluate.evaluate`). With ``workers > 1`` clips run in worker
processes (local engine or Ray through :func:`shv_toolkit.core.engines.make_engine`, generic ``map``); the row is
the same because merging always happens here, in clip order.

Metric setup, decoding + alignment, the clip errors and missing weights are those of the evaluation core
(:mod:`benchmark.core`, shared with ``shv-metrics``). Failures stay local: a clip whose generation,
decoding or metric raises one of :data:`benchmark.core.CLIP_ERRORS` records the reason (stage -> message)
and the run goes on; ``strict=True`` raises :class:`BenchError` instead. A metric that cannot be
set up (weights missing, e.g. SyncNet for LSE) is reported missing with its reason; its cells stay empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import core, leaderboard
from benchmark.core import CLIP_ERRORS, decode_state, encode_state, error_reason, fresh_shard
from benchmark.methods import Method, MethodUnavailableError, make_method
from benchmark.methods.base import ClipInput, MethodError, check_frames, safe_name
from benchmark.metrics import METRICS
from benchmark.metrics.base import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, CI_LEVEL, Clip, Metric, MetricResult
from benchmark.protocol import Protocol, as_protocol
from shv_toolkit.core.atomic import atomic_path, atomic_write_bytes
from shv_toolkit.core.errors import MissingWeightsError, ShvError, UsageError
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DRIVING_AUDIO = ("mix", "vocals")


class BenchError(ShvError):
    """``strict=True`` and a metric was missing or a clip failed."""


# ------------------------------------------------------------------------------------ config


@dataclass
class BenchConfig:
    """One ``shv-bench`` run. Defaults are the command line's."""

    method: str
    manifest: Path
    out: Path
    protocol: str | Protocol = "shv-v1"
    metrics: list[str] = field(default_factory=lambda: list(METRICS))  # all nine (eight modules)
    limit: int | None = None  # first N clips of the manifest
    method_options: dict[str, Any] = field(default_factory=dict)  # videos, name, checkpoint, device, seed
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"lse": {"weights": p}}
    dataset: str | None = None  # row's dataset name; default: the manifest directory's name
    driving_audio: str = "mix"  # "mix" (the song, as the paper) or "vocals" (stem when present)
    strict: bool = False
    workers: int = 1
    engine: str = "local"  # "local" (processes on this machine) or "ray"; see shv_toolkit.core.engines
    ray_address: str | None = None  # ray: "auto" or "host:port" of a running cluster
    retry_errors: bool = False
    progress: bool = True
    with_paper_rows: bool = False  # put the SINGER paper's reported rows beside the measured ones
    paper_rows: Path | None = None  # default: benchmark/paper_rows.csv
    bootstrap_samples: int = BOOTSTRAP_SAMPLES  # resamples of the 95 % intervals; 0: no intervals
    bootstrap_seed: int = BOOTSTRAP_SEED

    def __post_init__(self) -> None:
        self.manifest = Path(self.manifest)
        self.out = Path(self.out)
        if self.driving_audio not in DRIVING_AUDIO:
            raise UsageError(f"driving audio must be one of {DRIVING_AUDIO}, got {self.driving_audio!r}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise UsageError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        if not self.metrics:
            raise UsageError("no metric requested")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {self.limit}")
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.bootstrap_samples < 0:
            raise UsageError(f"--bootstrap must be >= 0, got {self.bootstrap_samples}")

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.manifest.resolve().parent.name


def protocol_with_overrides(protocol: str | Protocol, **overrides: Any) -> Protocol:
    """``protocol`` with some conventions changed; the name records them (``shv-v1[fvd_stride=16]``) so the
    row never passes for the named protocol, and the fingerprint changes with them."""
    proto = as_protocol(protocol)
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(proto, k) != v}
    if not changes:
        return proto
    fields = {f.name for f in dataclasses.fields(proto)}
    bad = sorted(set(changes) - fields)
    if bad:
        raise UsageError(f"unknown protocol setting(s) {', '.join(bad)}")
    tag = ",".join(f"{k}={v}" for k, v in sorted(changes.items()))
    return dataclasses.replace(proto, name=f"{proto.name}[{tag}]", **changes)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ the clip task


@dataclass
class ClipItem:
    """One test clip of the manifest, paths resolved."""

    clip_id: str
    video: Path | None
    audio: Path | None
    vocals: Path | None
    n_frames: int | None = None


@dataclass
class Job:
    """Everything a worker needs to process clips (picklable)."""

    method: str
    method_options: dict[str, Any]
    protocol: Protocol
    metrics: list[str]
    metric_options: dict[str, dict[str, Any]]
    out: Path
    dataset: str
    driving_audio: str
    retry_errors: bool

    @property
    def key(self) -> str:
        return _digest(dataclasses.asdict(self))


@dataclass
class Context:
    """Per-process objects of a job: the method and one template per available metric."""

    method: Method
    templates: dict[str, Metric]
    missing: dict[str, str]
    metric_fps: dict[str, str]  # metric -> fingerprint of its settings and weights
    cache_dir: Path
    videos_dir: Path
    features_dir: Path


def build_templates(
    names: list[str], protocol: Protocol, options: dict[str, dict[str, Any]], strict: bool = False
) -> tuple[dict[str, Metric], dict[str, str]]:
    """Metric objects for ``names`` and ``{name: reason}`` for those that cannot be set up
    (:func:`benchmark.core.build_metrics`); ``strict``: :class:`BenchError` instead."""
    templates, unavailable = core.build_metrics(names, protocol, options)
    if strict and unavailable:
        why = next(iter(unavailable.values()))
        raise BenchError(why.message) from why.error
    return templates, {n: why.reason for n, why in unavailable.items()}


_NOT_FINGERPRINTED = frozenset({"device", "progress"})


def _metric_fingerprint(name: str, metric: Metric, options: dict[str, Any] | None) -> str:
    try:
        hashes = metric.extractor_hashes()
    except MissingWeightsError:
        hashes = {}
    # options that cannot change a value (where it runs, whether a bar shows) stay out of it
    opts = {k: v for k, v in (options or {}).items() if v is not None and k not in _NOT_FINGERPRINTED}
    # the state's layout too: a cached state of an older layout (a metric that gained a state field, as
    # PSNR's ``wrapped``) is recomputed instead of failing to load
    return _digest({"metric": name, "class": type(metric).__qualname__, "options": opts, "hashes": hashes,
                    "state": metric.state_names()})


def make_context(job: Job, strict: bool = False) -> Context:
    method = make_method(job.method, **job.method_options)
    method.check()
    templates, missing = build_templates(job.metrics, job.protocol, job.metric_options, strict)
    fps = {n: _metric_fingerprint(n, m, job.metric_options.get(n)) for n, m in templates.items()}
    row = safe_name(method.row_name)
    return Context(
        method=method,
        templates=templates,
        missing=missing,
        metric_fps=fps,
        cache_dir=job.out / "cache" / safe_name(job.dataset) / safe_name(job.protocol.name) / row,
        videos_dir=job.out / "videos" / row,
        features_dir=job.out / "cache" / "features",
    )


_CONTEXTS: dict[str, Context] = {}


def _context_for(job: Job) -> Context:
    ctx = _CONTEXTS.get(job.key)
    if ctx is None:
        ctx = _CONTEXTS[job.key] = make_context(job)
    return ctx


def _load_cache(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    return rec if rec.get("cache_version") == CACHE_VERSION else None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(obj, allow_nan=False).encode())


def _driving_audio(job: Job, item: ClipItem) -> tuple[Path | None, str]:
    if job.driving_audio == "vocals" and item.vocals is not None and item.vocals.is_file():
        return item.vocals, "vocals"
    return item.audio, "mix"


def _clip_input(job: Job, item: ClipItem, gt: Clip) -> ClipInput:
    from shv_toolkit.core import media

    path, source = _driving_audio(job, item)
    n = int(round(gt.n_frames / gt.fps * job.protocol.sample_rate))
    if path is not None:
        audio = media.read_audio(path, sample_rate=job.protocol.sample_rate)
    elif gt.audio is not None:
        audio, source = gt.audio, "video"
    else:
        raise ShvError(f"clip {item.clip_id} has no audio (no wav in the manifest, none in the video)")
    audio = np.pad(audio[:n], (0, max(0, n - len(audio)))).astype(np.float32)
    return ClipInput(
        clip_id=item.clip_id,
        reference_image=np.ascontiguousarray(gt.frames[0]),
        audio=audio,
        sample_rate=job.protocol.sample_rate,
        num_frames=gt.n_frames,
        fps=job.protocol.fps,
        ground_truth_video=item.video,  # type: ignore[arg-type]
        audio_source=source,
    )


def _fvd_update(shard: Metric, gen: Clip, gt: Clip, features_dir: Path) -> None:
    """FVD update through the window-feature cache (features keyed by the SHA-256 of the exact frames)."""
    window = getattr(shard, "window", None)
    if (
        not callable(getattr(shard, "update_features", None))
        or not callable(getattr(shard, "features", None))
        or window is None
        or gen.n_frames != gt.n_frames
        or gt.n_frames < window
    ):
        shard.update(gen, gt)
        return
    settings = {
        k: getattr(shard, k, None) for k in ("backend", "window", "stride", "size", "batch_size")
    } | {"hashes": shard.extractor_hashes()}
    skey = _digest(settings)

    def feats(clip: Clip, side: str) -> np.ndarray:
        h = hashlib.sha256(np.ascontiguousarray(clip.frames).tobytes()).hexdigest()
        path = features_dir / f"{h}-{clip.frames.shape[0]}-{skey}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                log.warning("FVD feature cache %s unreadable (%s); recomputing", path, exc)
        f = np.asarray(shard.features(clip, desc=f"FVD {side}"))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, f, allow_pickle=False)
        return f

    shard.update_features(feats(gen, "generated"), feats(gt, "ground truth"))


@dataclass
class _ClipRun:
    """One clip between its cache look-up and its metrics (:func:`process_clip` in stages, so that the clips
    that need generating can be handed to the method together)."""

    job: Job
    item: ClipItem
    rec: dict[str, Any]
    cache_path: Path
    t_start: float
    todo: list[str] = field(default_factory=list)
    done: bool = False  # ``rec`` is final (failed early, or everything came from the cache)
    needs_generation: bool = False
    gen_path: Path | None = None
    clip_in: ClipInput | None = None
    gt: Clip | None = None

    def load_gt(self) -> Clip:
        if self.gt is None:
            assert self.item.video is not None
            self.gt = Clip.load(self.item.video, fps=self.job.protocol.fps, sample_rate=self.job.protocol.sample_rate,
                                clip_id=self.item.clip_id)
        return self.gt

    def finish(self) -> dict[str, Any]:
        """Write the record as it is (the clip stops here) and return it."""
        self.rec["seconds"]["total"] = time.perf_counter() - self.t_start
        _write_json(self.cache_path, self.rec)
        self.done = True
        return self.rec


def _begin_clip(job: Job, ctx: Context, item: ClipItem) -> _ClipRun:
    """The clip's cache look-up: what is reused, which metrics are left, whether it must be generated."""
    cache_path = ctx.cache_dir / f"{safe_name(item.clip_id)}.json"
    cached = _load_cache(cache_path)
    rec: dict[str, Any] = {
        "cache_version": CACHE_VERSION,
        "clip_id": item.clip_id,
        "errors": {},
        "metrics": {},
        "generation": None,
        "ground_truth_video": str(item.video) if item.video else None,
        "generated_video": None,
        "computed": [],
        "seconds": {},
    }
    run = _ClipRun(job, item, rec, cache_path, time.perf_counter())
    if item.video is None or not item.video.is_file():
        rec["errors"]["ground-truth"] = f"ground-truth video missing: {item.video}"
        rec["seconds"]["total"] = time.perf_counter() - run.t_start
        run.done = True
        return run
    gt_sha = sha256_file(item.video)
    audio_path, _ = _driving_audio(job, item)
    base_fp = {
        "gt_sha256": gt_sha,
        "method": ctx.method.fingerprint(),
        "protocol": job.protocol.fingerprint(),
        "driving_audio": [job.driving_audio, sha256_file(audio_path) if ctx.method.generates and audio_path else None],
    }
    fp = _digest(base_fp | {"clip": ctx.method.clip_fingerprint(item.clip_id)})
    reuse = cached is not None and cached.get("fingerprint") == fp
    if reuse:
        assert cached is not None
        stage_errors = {k: v for k, v in cached.get("errors", {}).items() if k in ("generate", "load", "align")}
        if stage_errors and job.retry_errors:
            reuse = False
    rec["fingerprint"] = fp

    todo = list(ctx.templates)
    if reuse:
        assert cached is not None
        rec["generation"] = cached.get("generation")
        rec["generated_video"] = cached.get("generated_video")
        stage_errors = {k: v for k, v in cached.get("errors", {}).items() if k in ("generate", "load", "align")}
        if stage_errors:  # the clip failed before any metric: nothing more to do
            rec["errors"] = dict(stage_errors)
            rec["seconds"] = dict(cached.get("seconds", {}))
            rec["cache_hit"] = True
            run.finish()
            return run
        for name, entry in cached.get("metrics", {}).items():
            if name not in ctx.templates or entry.get("fp") != ctx.metric_fps[name]:
                continue
            if "error" in entry and job.retry_errors:
                continue
            rec["metrics"][name] = entry
            if "error" in entry:
                rec["errors"][name] = entry["error"]
        todo = [n for n in ctx.templates if n not in rec["metrics"]]
        rec["seconds"] = {k: v for k, v in cached.get("seconds", {}).items() if k != "total"}
    rec["cache_hit"] = not todo
    run.todo = todo
    if not todo:
        run.finish()
        return run
    old = rec["generated_video"]
    if reuse and old and Path(old).is_file():  # the generated video is reused
        run.gen_path = Path(old)
    else:
        run.needs_generation = True
    return run


def _generated(job: Job, ctx: Context, run: _ClipRun, produce: Any) -> None:
    """Store one clip's method output (``produce()``: frames or a path; frames are written to the videos
    directory) or record why it failed; adds the seconds spent to the clip's ``generate`` time."""
    t0 = time.perf_counter()
    try:
        out = produce()
        assert run.clip_in is not None
        if isinstance(out, Path | str):
            run.gen_path = Path(out)
        else:
            frames = check_frames(out, run.clip_in, ctx.method.row_name)
            from shv_toolkit.core import media

            gen_path = ctx.videos_dir / f"{safe_name(run.item.clip_id)}.mp4"
            media.write_video(gen_path, frames, fps=job.protocol.fps, audio=run.clip_in.audio,
                              sample_rate=run.clip_in.sample_rate)
            run.gen_path = gen_path
        run.rec["generation"] = {"audio_source": run.clip_in.audio_source}
    except MethodUnavailableError:
        raise
    except CLIP_ERRORS as exc:
        run.gen_path = None
        run.rec["errors"]["generate"] = error_reason(exc)
        log.warning("clip %s: generation failed: %s", run.item.clip_id, run.rec["errors"]["generate"])
    run.rec["seconds"]["generate"] = run.rec["seconds"].get("generate", 0.0) + time.perf_counter() - t0
    run.rec["generated_video"] = str(run.gen_path) if run.gen_path else None


def _generate(job: Job, ctx: Context, runs: list[_ClipRun]) -> None:
    """Generate the clips of ``runs`` (all need it): one :meth:`Method.generate_batch` call for them when
    there are several, else :meth:`Method.generate`. A batch that raises (or returns the wrong number of
    outputs) is generated again one clip at a time, so a bad clip fails only itself."""
    ready: list[_ClipRun] = []
    for run in runs:
        t0 = time.perf_counter()
        try:
            run.clip_in = _clip_input(job, run.item, run.load_gt())
            ready.append(run)
        except CLIP_ERRORS as exc:
            run.rec["errors"]["generate"] = error_reason(exc)
            run.rec["generated_video"] = None
            log.warning("clip %s: generation failed: %s", run.item.clip_id, run.rec["errors"]["generate"])
        run.rec["seconds"]["generate"] = time.perf_counter() - t0
    if len(ready) > 1:
        t0 = time.perf_counter()
        outs: list[Any] | None
        try:
            outs = list(ctx.method.generate_batch([r.clip_in for r in ready]))  # type: ignore[misc]
            if len(outs) != len(ready):
                raise MethodError(f"{ctx.method.row_name} returned {len(outs)} outputs for {len(ready)} clips")
        except MethodUnavailableError:
            raise
        except CLIP_ERRORS as exc:
            log.warning("a batch of %d clips failed (%s); generating them one at a time", len(ready),
                        error_reason(exc))
            outs = None
        share = (time.perf_counter() - t0) / len(ready)  # the batch's time, shared by its clips
        for run in ready:
            run.rec["seconds"]["generate"] += share
        if outs is not None:
            for run, out in zip(ready, outs, strict=True):
                _generated(job, ctx, run, lambda out=out: out)
            return
    for run in ready:
        _generated(job, ctx, run, lambda run=run: ctx.method.generate(run.clip_in))  # type: ignore[arg-type]


def _score_clip(job: Job, ctx: Context, run: _ClipRun) -> dict[str, Any]:
    """Decode, align and score a generated clip (or finish one that has nothing more to do)."""
    if run.done:
        return run.rec
    rec, item = run.rec, run.item
    gen_path = run.gen_path
    if gen_path is None:
        return run.finish()

    # ---- decode and align ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    try:
        gen_a, gt_a = core.load_pair(gen_path, run.load_gt, job.protocol, item.clip_id)
    except core.PairError as exc:
        rec["errors"][exc.stage] = exc.reason
        rec["seconds"]["load"] = time.perf_counter() - t0
        log.warning("clip %s: %s failed: %s", item.clip_id, exc.stage, exc.reason)
        return run.finish()
    rec["seconds"]["load"] = time.perf_counter() - t0

    # ---- metrics --------------------------------------------------------------------------------------
    def fvd_update(shard: Metric, gen: Clip, gt: Clip) -> None:
        _fvd_update(shard, gen, gt, ctx.features_dir)

    for name in run.todo:
        t1 = time.perf_counter()
        shard = fresh_shard(ctx.templates[name])
        entry: dict[str, Any] = {"fp": ctx.metric_fps[name]}
        outcome = core.update_metric(shard, gen_a, gt_a, fvd_update if name == "fvd" else None)
        if outcome.missing is not None:
            entry = {"missing": outcome.missing}
        elif outcome.error is not None:
            entry["error"] = rec["errors"][name] = outcome.error
            log.warning("clip %s: metric %s failed: %s", item.clip_id, name, entry["error"])
        else:
            entry["state"] = encode_state(shard)
            entry["values"] = {
                r.name: r.per_clip.get(item.clip_id) for r in shard.results() if r.per_clip
            }
        entry["seconds"] = time.perf_counter() - t1
        rec["seconds"][name] = entry["seconds"]
        rec["metrics"][name] = entry
        rec["computed"].append(name)
    rec["seconds"]["total"] = time.perf_counter() - run.t_start
    cacheable = dict(rec)
    cacheable["metrics"] = {k: v for k, v in rec["metrics"].items() if "missing" not in v}
    _write_json(run.cache_path, cacheable)
    run.done, run.gt = True, None
    return rec


def process_clip(job: Job, ctx: Context, item: ClipItem) -> dict[str, Any]:
    """Generate and score one clip, reusing its cache; returns (and caches) the clip's record."""
    run = _begin_clip(job, ctx, item)
    if run.needs_generation:
        _generate(job, ctx, [run])
    return _score_clip(job, ctx, run)


def process_clips(job: Job, ctx: Context, items: Iterable[tuple[int, ClipItem]],
                  batch: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`process_clip` over ``(index, item)`` pairs, the clips that need generating (not cached) handed
    to the method ``batch`` at a time (:meth:`Method.generate_batch`); ``(index, record)`` as clips finish
    (cached clips at once, generated ones after their batch). Every record equals :func:`process_clip`'s."""
    pending: list[tuple[int, _ClipRun]] = []

    def flush() -> list[tuple[int, dict[str, Any]]]:
        _generate(job, ctx, [r for _, r in pending])
        done = [(i, _score_clip(job, ctx, r)) for i, r in pending]
        pending.clear()
        return done

    for i, item in items:
        run = _begin_clip(job, ctx, item)
        if not run.needs_generation:
            yield i, _score_clip(job, ctx, run)
            continue
        pending.append((i, run))
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def batch_size(method: Method) -> int:
    """How many clips the bench hands ``method`` at once (its ``batch_clips``, at least 1)."""
    return max(1, int(getattr(method, "batch_clips", 1) or 1))


# ------------------------------------------------------------------------------------ engines


@dataclass
class ClipTask:
    """``process_clip`` for one job as a picklable callable for :meth:`shv_toolkit.core.engines.Engine.map`;
    each worker process builds the job's method and metric templates once and keeps them."""

    job: Job

    def __call__(self, item: ClipItem) -> dict[str, Any]:
        return process_clip(self.job, _context_for(self.job), item)


@dataclass
class ClipBatchTask:
    """:func:`process_clips` over one group of ``(index, item)`` pairs, for ``Engine.map`` (a worker gets
    ``batch`` clips at a time and hands those it must generate to the method together)."""

    job: Job
    batch: int

    def __call__(self, group: list[tuple[int, ClipItem]]) -> list[tuple[int, dict[str, Any]]]:
        return list(process_clips(self.job, _context_for(self.job), group, self.batch))


def _engine_results(cfg: BenchConfig, job: Job, items: list[ClipItem],
                    batch: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, record)`` from the engine's generic ``map`` (completion order): one task per clip, or per
    group of ``batch`` clips."""
    from shv_toolkit.core.engines import make_engine

    with make_engine(cfg.engine, workers=cfg.workers, ray_address=cfg.ray_address) as engine:
        if batch <= 1:
            yield from engine.map(ClipTask(job), items)
            return
        indexed = list(enumerate(items))
        groups = [indexed[k:k + batch] for k in range(0, len(indexed), batch)]
        for _, records in engine.map(ClipBatchTask(job, batch), groups):
            yield from records


# ----------------------------------------------------------------------------------- the run


@dataclass
class BenchResult:
    """Outcome of one run: the leaderboard row, per-clip records and what went wrong."""

    config: BenchConfig
    protocol: Protocol
    row_name: str
    row: dict[str, Any]
    results: dict[str, MetricResult]
    records: list[dict[str, Any]]
    missing: dict[str, str]
    failures: dict[str, dict[str, str]]  # clip -> {stage/metric: reason}
    input_notes: dict[str, list[str]]
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    metric_objects: dict[str, Metric] = field(default_factory=dict, repr=False)


def read_clips(manifest: Path, limit: int | None = None) -> list[ClipItem]:
    from shv_toolkit.manifest.io import read_rows

    if not manifest.is_file():
        raise UsageError(f"manifest not found: {manifest}")
    rows = read_rows(manifest)
    if not rows:
        raise UsageError(f"manifest {manifest} has no clips")
    root = manifest.resolve().parent
    items = []
    for r in rows[:limit] if limit else rows:
        def p(key: str, r: dict[str, Any] = r) -> Path | None:
            v = r.get(key)
            return (root / v) if v else None

        items.append(ClipItem(str(r["clip_id"]), p("video_path"), p("audio_path"), p("vocals_path"),
                              r.get("n_frames")))
    ids = [c.clip_id for c in items]
    if len(set(ids)) != len(ids):
        raise UsageError(f"manifest {manifest} has duplicate clip ids")
    return items


def merge_records(
    records: list[dict[str, Any]], templates: dict[str, Metric]
) -> tuple[dict[str, Metric], dict[str, str]]:
    """Merge every clip's one-clip shard (manifest order) with ``Metric.merge``; metrics that went missing
    during the run (weights vanished mid-run) are returned with their reason."""
    merged = {n: fresh_shard(t) for n, t in templates.items()}
    missing: dict[str, str] = {}
    for rec in records:
        for name, entry in rec.get("metrics", {}).items():
            if name not in merged:
                continue
            if "missing" in entry:
                missing[name] = entry["missing"]
            elif "state" in entry:
                merged[name].merge(decode_state(fresh_shard(templates[name]), entry["state"]))
    for name in missing:
        merged.pop(name, None)
    return merged, missing


def row_intervals(
    records: list[dict[str, Any]],
    templates: dict[str, Metric],
    merged: dict[str, Metric],
    clip_ids: list[str],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float] | None]:
    """Bootstrap interval of every number of a row: ``{result name: (lo, hi) or None}``.

    One resample matrix over the row's clips (``clip_ids``, manifest order, failed clips included: they
    count as absent in every resample) serves every metric, so the metrics of a row, and rows of the same
    manifest, are resampled alike. Per-clip metrics: the mean of the drawn clips' values
    (:meth:`Metric.intervals`). FVD: each resample's window statistics are the count-weighted sums of
    the drawn clips' one-clip states (from ``records``) and its distance is recomputed from them
    (:func:`benchmark.metrics.fvd.bootstrap_fvd`)."""
    by_clip = {r["clip_id"]: r.get("metrics", {}).get("fvd", {}) for r in records}

    def fvd_shard(cid: str) -> Metric | None:
        state = by_clip.get(cid, {}).get("state")
        return None if state is None else decode_state(fresh_shard(templates["fvd"]), state)

    return core.metric_intervals(merged, clip_ids, fvd_shard, samples, seed, level)


def run_bench(cfg: BenchConfig, protocol: Protocol | None = None) -> BenchResult:
    """Run ``cfg.method`` over the manifest's clips, write the outputs in ``cfg.out`` and return the result
    (the leaderboard files are rewritten with this method's row replaced)."""
    from tqdm import tqdm

    t_run = time.perf_counter()
    proto = protocol or as_protocol(cfg.protocol)
    items = read_clips(cfg.manifest, cfg.limit)
    cfg.out.mkdir(parents=True, exist_ok=True)
    job = Job(cfg.method, dict(cfg.method_options), proto, list(dict.fromkeys(cfg.metrics)),
              {k: dict(v) for k, v in cfg.metric_options.items()}, cfg.out.resolve(), cfg.dataset_name,
              cfg.driving_audio, cfg.retry_errors)
    ctx = make_context(job, strict=cfg.strict)  # fails fast: method unavailable, strict + missing metric
    _CONTEXTS[job.key] = ctx
    records: list[dict[str, Any] | None] = [None] * len(items)
    batch = batch_size(ctx.method)
    if cfg.engine == "local" and cfg.workers <= 1:  # in this process, with the objects built above
        results_iter: Iterable[tuple[int, dict[str, Any]]] = (
            ((i, process_clip(job, ctx, it)) for i, it in enumerate(items)) if batch <= 1
            else process_clips(job, ctx, enumerate(items), batch)
        )
    else:
        results_iter = _engine_results(cfg, job, items, batch)
    bar = tqdm(total=len(items), desc=f"bench {ctx.method.row_name}", unit="clip", disable=not cfg.progress)
    try:
        for i, rec in results_iter:
            records[i] = rec
            secs = rec.get("seconds", {}).get("total", 0.0)
            status = "cached" if rec.get("cache_hit") else ("failed" if rec["errors"] else "ok")
            bar.set_postfix_str(f"{rec['clip_id'][:8]} {status} {secs:.1f}s", refresh=False)
            bar.update(1)
            if cfg.strict and rec["errors"]:
                raise BenchError(f"clip {rec['clip_id']}: " + "; ".join(f"{k}: {v}" for k, v in rec["errors"].items()))
            missing_now = {k: v["missing"] for k, v in rec.get("metrics", {}).items() if "missing" in v}
            if cfg.strict and missing_now:
                raise BenchError("; ".join(f"metric {k}: {v}" for k, v in missing_now.items()))
    finally:
        bar.close()
    done = [r for r in records if r is not None]
    ctx.method.close()

    merged, missing_late = merge_records(done, ctx.templates)
    missing = dict(ctx.missing) | missing_late
    results, hashes = core.collect_results(job.metrics, merged, missing)

    failures = {r["clip_id"]: dict(r["errors"]) for r in done if r["errors"]}
    notes = ctx.method.input_notes([c.clip_id for c in items])
    intervals: dict[str, tuple[float, float] | None] = {}
    ci_text = None
    if cfg.bootstrap_samples > 0 and merged:
        t_ci = time.perf_counter()
        intervals = row_intervals(done, ctx.templates, merged, [c.clip_id for c in items],
                                  cfg.bootstrap_samples, cfg.bootstrap_seed)
        ci_text = core.ci_description(len(items), "test clips", cfg.bootstrap_samples, cfg.bootstrap_seed)
        log.info("bootstrap intervals: %.1f s", time.perf_counter() - t_ci)
    row = leaderboard.make_row(
        method=ctx.method.row_name,
        dataset=cfg.dataset_name,
        protocol=proto,
        results=results,
        requested=job.metrics,
        missing=missing,
        n_clips=len(items),
        failures=failures,
        extractor_hashes=hashes,
        driving_audio=cfg.driving_audio,
        manifest=str(cfg.manifest),
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        intervals=intervals,
        ci=ci_text,
        method_info=ctx.method.row_info(),
    )
    result = BenchResult(
        config=cfg,
        protocol=proto,
        row_name=ctx.method.row_name,
        row=row,
        results=results,
        records=done,
        missing=missing,
        failures=failures,
        input_notes=notes,
        n_computed=sum(1 for r in done if not r.get("cache_hit")),
        n_cached=sum(1 for r in done if r.get("cache_hit")),
        seconds=time.perf_counter() - t_run,
        metric_objects=merged,
    )
    leaderboard.update_outputs(cfg.out, result)
    return result


__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "ClipBatchTask",
    "ClipItem",
    "ClipTask",
    "batch_size",
    "merge_records",
    "process_clip",
    "process_clips",
    "protocol_with_overrides",
    "read_clips",
    "row_intervals",
    "run_bench",
]
