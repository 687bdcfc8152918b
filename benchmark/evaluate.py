"""The evaluation driver: score pairs of (generated, ground truth) clips with several metrics at once.

Each pair is decoded once (at the protocol's fps and sample rate), aligned once (the rule in
:mod:`benchmark.metrics.base`), and handed to every requested metric, all through the evaluation core
:mod:`benchmark.core` that ``shv-bench`` uses too (so a clip error reads the same in both). Failures stay
local:

* a metric that cannot be built or run because its weights are missing (``MissingWeightsError``),
  or whose module cannot be imported, is reported *missing* with its reason and the others go on;
* a clip that fails to load, align or score (:data:`benchmark.core.CLIP_ERRORS`) records an error for
  that clip (and metric) and the evaluation goes on with the next clip.

With ``strict=True`` any of these raises instead. Results carry the protocol's name, fingerprint and
settings, and the SHA-256 of every extractor weight file (``Metric.extractor_hashes()``), so two
results are comparable exactly when those match. Shards evaluated separately combine with
:func:`merge_results`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import core
from benchmark.core import build_metric
from benchmark.metrics import METRICS
from benchmark.metrics.base import BOOTSTRAP_SEED, Clip, Metric, MetricResult
from benchmark.protocol import Protocol, as_protocol
from shv_toolkit.core.errors import MissingWeightsError, ShvError, UsageError
from shv_toolkit.core.jsoncodec import to_plain

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


class EvaluationError(ShvError):
    """``strict=True`` and a metric was missing or a clip failed."""


# ------------------------------------------------------------------------------------ pairing


@dataclass
class MatchedPairs:
    """Videos of two directories matched by file stem; iterating yields ``(generated, ground_truth)``."""

    pairs: list[tuple[Path, Path]]
    unmatched_generated: list[Path] = field(default_factory=list)
    unmatched_ground_truth: list[Path] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[Path, Path]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def list_videos(directory: str | Path) -> dict[str, Path]:
    """Video files directly inside ``directory`` by stem; two files with one stem is an error."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"not a directory: {d}")
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            if p.stem in out:
                raise UsageError(f"{d}: two videos named {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out


def match_pairs(generated_dir: str | Path, ground_truth_dir: str | Path) -> MatchedPairs:
    """Pair videos of two directories by file name without extension (``clip07.mp4`` <-> ``clip07.mov``).

    Files without a partner are listed in ``unmatched_*`` (and later in the evaluation result), never
    silently dropped."""
    gen, gt = list_videos(generated_dir), list_videos(ground_truth_dir)
    common = sorted(gen.keys() & gt.keys())
    return MatchedPairs(
        pairs=[(gen[k], gt[k]) for k in common],
        unmatched_generated=[gen[k] for k in sorted(gen.keys() - gt.keys())],
        unmatched_ground_truth=[gt[k] for k in sorted(gt.keys() - gen.keys())],
    )


# ------------------------------------------------------------------------------------- result


@dataclass
class EvaluationResult:
    """Everything an evaluation produced. ``results`` holds every reported number (``Metric.results()``:
    LSE gives ``lse_d`` and ``lse_c``...) and, for a missing metric, a result with ``value=None`` and its
    ``missing_reason``."""

    protocol: Protocol
    requested: list[str]
    results: dict[str, MetricResult] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # metric -> reason
    clip_errors: dict[str, dict[str, str]] = field(default_factory=dict)  # clip -> {"load"/"align"/metric: reason}
    extractor_hashes: dict[str, str] = field(default_factory=dict)  # "metric.name" -> sha256
    unmatched_generated: list[str] = field(default_factory=list)
    unmatched_ground_truth: list[str] = field(default_factory=list)
    n_pairs: int = 0
    clip_ids: list[str] = field(default_factory=list)  # pairs that were loaded and aligned
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "load" and per metric
    metric_objects: dict[str, Metric] = field(default_factory=dict, repr=False)  # for merge_results
    # bootstrap intervals over the scored clips (``bootstrap_samples`` 0: none); see :func:`evaluate`
    bootstrap_samples: int = 0
    bootstrap_seed: int = BOOTSTRAP_SEED
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    fvd_shards: dict[str, Metric] = field(default_factory=dict, repr=False)  # clip -> one-clip FVD state

    @property
    def ok(self) -> bool:
        """True when every requested metric was computed on every pair and nothing was left unmatched."""
        return not (self.missing or self.clip_errors or self.unmatched_generated or self.unmatched_ground_truth)

    def value(self, name: str) -> float | None:
        return self.results[name].value

    @property
    def ci(self) -> str | None:
        """How ``intervals`` were made (None when they were not)."""
        if not self.bootstrap_samples:
            return None
        return core.ci_description(len(self.clip_ids), "scored clips", self.bootstrap_samples, self.bootstrap_seed)

    def to_dict(self, per_clip: bool = False) -> dict[str, Any]:
        from benchmark import __version__

        return to_plain(
            {
                "toolkit_version": __version__,
                "protocol": {
                    "name": self.protocol.name,
                    "fingerprint": self.protocol.fingerprint(),
                    "settings": self.protocol.to_dict(),
                },
                "extractor_hashes": dict(self.extractor_hashes),
                "metrics": {k: r.to_dict(per_clip=per_clip) for k, r in self.results.items()},
                "missing": dict(self.missing),
                "clip_errors": self.clip_errors,
                "unmatched": {
                    "generated": list(self.unmatched_generated),
                    "ground_truth": list(self.unmatched_ground_truth),
                },
                "intervals": {k: (None if v is None else list(v)) for k, v in self.intervals.items()},
                "ci": self.ci,
                "n_pairs": self.n_pairs,
                "n_scored": len(self.clip_ids),
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "ok": self.ok,
            }
        )


# ------------------------------------------------------------------------------------ driver


def _pair_id(gen: Clip | str | Path, gt: Clip | str | Path, index: int) -> str:
    if isinstance(gt, Clip) and gt.clip_id:
        return gt.clip_id
    if isinstance(gen, Clip) and gen.clip_id:
        return gen.clip_id
    if not isinstance(gt, Clip):
        return Path(gt).stem
    return f"clip{index:06d}"


def evaluate(
    pairs: Iterable[tuple[Clip | str | Path, Clip | str | Path]],
    metrics: Sequence[str],
    protocol: Protocol | str = "shv-v1",
    strict: bool = False,
    progress: bool = True,
    metric_options: dict[str, dict[str, Any]] | None = None,
    bootstrap: int = 0,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> EvaluationResult:
    """Score every pair with every metric in ``metrics`` (names of :data:`METRICS`).

    ``bootstrap`` > 0: a 95 % percentile bootstrap interval of every number over the scored clips, with
    that many seeded resamples (``result.intervals``; FVD resamples clips and recomputes the distance from
    the drawn clips' window statistics, so each clip's FVD state is kept: about 2.6 MB per clip).

    ``pairs`` are ``(generated, ground_truth)`` as video paths or :class:`Clip` objects (at the
    protocol's fps); the clip id is the ground truth's ``clip_id`` or file stem. A
    :class:`MatchedPairs` carries its unmatched files into the result. ``metric_options`` maps a
    metric name to keyword arguments of its class (e.g. ``{"lse": {"weights": path}}``).
    Unknown metric names raise ``KeyError`` before anything is decoded.
    """
    from tqdm import tqdm

    proto = as_protocol(protocol)
    names = list(dict.fromkeys(metrics))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if bootstrap < 0:
        raise UsageError(f"bootstrap must be >= 0, got {bootstrap}")
    res = EvaluationResult(protocol=proto, requested=names, bootstrap_samples=int(bootstrap),
                           bootstrap_seed=int(bootstrap_seed))
    if isinstance(pairs, MatchedPairs):
        res.unmatched_generated = [str(p) for p in pairs.unmatched_generated]
        res.unmatched_ground_truth = [str(p) for p in pairs.unmatched_ground_truth]
        if strict and (pairs.unmatched_generated or pairs.unmatched_ground_truth):
            raise EvaluationError(
                f"unmatched videos: generated {res.unmatched_generated}, ground truth {res.unmatched_ground_truth}"
            )

    objects, unavailable = core.build_metrics(names, proto, metric_options)
    for name, why in unavailable.items():
        if strict:
            if isinstance(why.error, MissingWeightsError):
                raise why.error
            raise EvaluationError(why.message) from why.error
        res.missing[name] = why.reason
    timings = {"load": 0.0, **{n: 0.0 for n in objects}}

    pair_list = list(pairs)
    res.n_pairs = len(pair_list)
    seen: set[str] = set()
    for index, (g, r) in enumerate(tqdm(pair_list, desc="evaluate", unit="clip", disable=not progress)):
        cid = _pair_id(g, r, index)
        if cid in seen:
            _clip_error(res, cid, "pair", "duplicate clip id (two pairs with one name)", strict)
            continue
        seen.add(cid)
        t0 = time.perf_counter()
        try:
            gen_a, gt_a = core.load_pair(g, r, proto, cid)
        except core.PairError as exc:
            timings["load"] += time.perf_counter() - t0
            _clip_error(res, cid, exc.stage, exc.reason, strict)
            continue
        timings["load"] += time.perf_counter() - t0
        res.clip_ids.append(cid)
        for name in list(objects):
            t1 = time.perf_counter()
            if name == "fvd" and bootstrap:  # keep the clip's own state for the FVD interval
                shard = core.fresh_shard(objects[name])
                outcome = core.update_metric(shard, gen_a, gt_a)
                if outcome.missing is None and outcome.error is None:
                    objects[name].merge(shard)  # the same sums as updating objects[name] directly
                    res.fvd_shards[cid] = shard
            else:
                outcome = core.update_metric(objects[name], gen_a, gt_a)
            timings[name] += time.perf_counter() - t1
            if outcome.missing is not None:
                if strict:
                    assert outcome.exception is not None
                    raise outcome.exception
                res.missing[name] = outcome.missing
                log.warning("metric %s is missing (%s)", name, outcome.missing)
                del objects[name]
            elif outcome.error is not None:
                _clip_error(res, cid, name, outcome.error, strict)
        del gen_a, gt_a

    res.timings = timings
    res.metric_objects = objects
    _collect(res)
    return res


def _intervals(res: EvaluationResult) -> None:
    """(Re)compute ``res.intervals`` from the metric objects (and the per-clip FVD states)."""
    res.intervals = {}
    if not res.bootstrap_samples or not res.clip_ids:
        return
    res.intervals = core.metric_intervals(res.metric_objects, res.clip_ids, res.fvd_shards.get,
                                          res.bootstrap_samples, res.bootstrap_seed)


def _clip_error(res: EvaluationResult, cid: str, where: str, reason: str, strict: bool) -> None:
    if strict:
        raise EvaluationError(f"clip {cid}: {where}: {reason}")
    log.warning("clip %s: %s failed: %s", cid, where, reason)
    res.clip_errors.setdefault(cid, {})[where] = reason


def _collect(res: EvaluationResult) -> None:
    """(Re)build ``results`` and ``extractor_hashes`` from the metric objects and the missing list."""
    res.results, res.extractor_hashes = core.collect_results(res.requested, res.metric_objects, res.missing)
    _intervals(res)


def merge_results(a: EvaluationResult, b: EvaluationResult) -> EvaluationResult:
    """Combine two shards evaluated under the same protocol (and extractor weights) into ``a``.

    Metric states are merged with ``Metric.merge`` (so the aggregate equals one pass over both shards);
    missing metrics, clip errors, unmatched files and timings are united."""
    if a.protocol.fingerprint() != b.protocol.fingerprint():
        raise ValueError(
            f"shards use different protocols ({a.protocol.name} {a.protocol.fingerprint()} vs "
            f"{b.protocol.name} {b.protocol.fingerprint()})"
        )
    for k in a.extractor_hashes.keys() & b.extractor_hashes.keys():
        if a.extractor_hashes[k] != b.extractor_hashes[k]:
            raise ValueError(f"shards used different weights for {k}")
    if a.requested != b.requested:
        raise ValueError(f"shards computed different metrics: {a.requested} vs {b.requested}")
    for name, obj in b.metric_objects.items():
        if name in a.metric_objects:
            a.metric_objects[name].merge(obj)
    for name in list(a.metric_objects):
        if name not in b.metric_objects:  # missing in shard b: the merged value would cover a part only
            a.missing.setdefault(name, b.missing.get(name, "missing in another shard"))
            del a.metric_objects[name]
    for name, reason in b.missing.items():
        a.missing.setdefault(name, reason)
    for cid, errs in b.clip_errors.items():
        a.clip_errors.setdefault(cid, {}).update(errs)
    a.unmatched_generated += b.unmatched_generated
    a.unmatched_ground_truth += b.unmatched_ground_truth
    a.n_pairs += b.n_pairs
    a.clip_ids += b.clip_ids
    a.fvd_shards.update(b.fvd_shards)
    for k, v in b.timings.items():
        a.timings[k] = a.timings.get(k, 0.0) + v
    _collect(a)
    return a


__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "MatchedPairs",
    "VIDEO_EXTENSIONS",
    "build_metric",
    "evaluate",
    "list_videos",
    "match_pairs",
    "merge_results",
]
