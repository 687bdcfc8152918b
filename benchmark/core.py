"""The one evaluation core of ``shv-metrics`` (:mod:`benchmark.evaluate`) and ``shv-bench``
(:mod:`benchmark.runner`).

Both drivers use, from here and nowhere else:

* :func:`build_metrics`: the metric objects of a protocol, and ``{name: reason}`` for those that cannot be
  set up (weights missing, module not importable, bad settings): reported *missing*, never zeros;
* :func:`load_pair`: decoding of a (generated, ground truth) pair at the protocol's fps and sample rate,
  resizing to the protocol's evaluation size and the alignment rule of :mod:`benchmark.metrics.base`;
  a failure names its stage (``"load"`` or ``"align"``);
* :data:`CLIP_ERRORS`: the one set of exceptions that fail *one clip* (recorded as
  :func:`error_reason`, the run goes on); anything else is a bug and propagates;
* :func:`update_metric`: one metric updated on one aligned pair, with the outcome
  (``None``: scored; a missing-weights reason; a clip error);
* :func:`collect_results`: every reported number (``Metric.results()``) plus an empty result with its
  reason for every missing metric, and the extractor weight hashes;
* :func:`metric_intervals`: the bootstrap interval of every number (FVD recomputed per resample from the
  clips' own window statistics);
* :func:`encode_state` / :func:`decode_state`: a metric's declared state (``Metric.add_state``) as JSON
  (:mod:`shv_toolkit.core.jsoncodec`), for the bench's per-clip cache.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.metrics import metric_class
from benchmark.metrics.base import (
    CI_LEVEL,
    Clip,
    Metric,
    MetricResult,
    align,
    bootstrap_counts,
    resize_frames,
)
from benchmark.protocol import Protocol
from shv_toolkit.core.errors import MissingWeightsError, ShvError
from shv_toolkit.core.jsoncodec import decode, encode

log = logging.getLogger(__name__)

#: exceptions that fail one clip (its decoding, alignment, generation or one metric on it): the clip
#: records ``error_reason(exc)`` and the evaluation goes on. A model crashing on one input raises any
#: of these; anything else (KeyboardInterrupt, a bug's NameError...) propagates.
CLIP_ERRORS: tuple[type[BaseException], ...] = (
    ShvError, ValueError, RuntimeError, OSError, ArithmeticError, LookupError, TypeError, AssertionError,
    MemoryError,
)


def error_reason(exc: BaseException) -> str:
    """How a clip error is recorded: ``"ExceptionClass: message"``."""
    return f"{exc.__class__.__name__}: {exc}"


# ---------------------------------------------------------------------------------- metric setup


def build_metric(name: str, protocol: Protocol, options: dict[str, Any] | None = None) -> Metric:
    """Instantiate metric ``name`` for ``protocol``. ``options`` are keyword arguments for its class;
    the ones its constructor does not accept are ignored with a warning (``protocol`` is passed when
    accepted). Raises ``KeyError`` for an unknown name, ``ImportError``/``AttributeError`` when its
    module is not available, and whatever the constructor raises (e.g. ``MissingWeightsError``)."""
    cls = metric_class(name)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    if "protocol" in params or takes_any:
        kwargs["protocol"] = protocol
    for k, v in (options or {}).items():
        if v is None:
            continue
        if k in params or takes_any:
            kwargs[k] = v
        else:
            log.warning("metric %s does not take option %r; ignored", name, k)
    return cls(**kwargs)


@dataclass
class MetricUnavailable:
    """Why a metric could not be set up; ``reason`` is what results and leaderboards show."""

    reason: str
    error: BaseException
    message: str  # for a strict run: "metric NAME is not available: ..." / "... cannot be set up: ..."


def build_metrics(
    names: Sequence[str], protocol: Protocol, options: Mapping[str, dict[str, Any] | None] | None = None
) -> tuple[dict[str, Metric], dict[str, MetricUnavailable]]:
    """The metric objects of ``names`` under ``protocol`` and, for those that cannot be set up, why:
    weights missing (``MissingWeightsError``), module not available (``ImportError``/``AttributeError``)
    or bad settings (``ShvError``/``ValueError``/``OSError``). Each is logged once; the caller decides
    whether that is fatal (strict)."""
    objects: dict[str, Metric] = {}
    missing: dict[str, MetricUnavailable] = {}
    for name in names:
        try:
            objects[name] = build_metric(name, protocol, (options or {}).get(name))
        except (MissingWeightsError, ImportError, AttributeError) as exc:
            kind = "weights missing" if isinstance(exc, MissingWeightsError) else "not available"
            missing[name] = MetricUnavailable(f"{kind}: {exc}", exc, f"metric {name} is not available: {exc}")
        except (ShvError, ValueError, OSError) as exc:
            missing[name] = MetricUnavailable(f"cannot be set up: {error_reason(exc)}", exc,
                                              f"metric {name} cannot be set up: {exc}")
        else:
            continue
        log.warning("metric %s is missing (%s)", name, missing[name].reason)
    return objects, missing


def fresh_shard(template: Metric) -> Metric:
    """An empty metric of the template's class and settings, sharing its (read-only) models."""
    shard = copy.copy(template)
    shard.reset()
    return shard


# ---------------------------------------------------------------------------- decoding, alignment


class PairError(ShvError):
    """A pair failed before any metric: ``stage`` is ``"load"`` or ``"align"``, ``error`` the cause."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error_reason(error)}")
        self.stage = stage
        self.error = error

    @property
    def reason(self) -> str:
        return error_reason(self.error)


def as_clip(x: Clip | str | Path, protocol: Protocol, clip_id: str | None) -> Clip:
    """``x`` decoded at the protocol's fps and sample rate (a :class:`Clip` must already be at its fps)."""
    if isinstance(x, Clip):
        if abs(x.fps - protocol.fps) > 1e-3:
            raise ShvError(
                f"clip {x.clip_id or x.path} is at {x.fps} fps; protocol {protocol.name} needs {protocol.fps}"
            )
        return x
    return Clip.load(x, fps=protocol.fps, sample_rate=protocol.sample_rate, clip_id=clip_id)


def align_pair(gen: Clip, gt: Clip, protocol: Protocol, clip_id: str) -> tuple[Clip, Clip]:
    """The ground truth at the protocol's evaluation size, then the alignment rule; both get ``clip_id``."""
    if protocol.eval_size is not None:
        gt = Clip(resize_frames(gt.frames, protocol.eval_size), gt.fps, gt.audio, gt.sample_rate, clip_id, gt.path)
    gen_a, gt_a = align(gen, gt, protocol.max_length_mismatch)
    gen_a.clip_id = gt_a.clip_id = clip_id
    return gen_a, gt_a


def load_pair(
    generated: Clip | str | Path | Callable[[], Clip],
    ground_truth: Clip | str | Path | Callable[[], Clip],
    protocol: Protocol,
    clip_id: str,
) -> tuple[Clip, Clip]:
    """Decode (ground truth first) and align one pair; a :data:`CLIP_ERRORS` failure raises
    :class:`PairError` naming its stage. A callable is called for its (cached) clip."""
    stage = "load"
    try:
        gt = ground_truth() if callable(ground_truth) else as_clip(ground_truth, protocol, clip_id)
        gen = generated() if callable(generated) else as_clip(generated, protocol, clip_id)
        stage = "align"
        return align_pair(gen, gt, protocol, clip_id)
    except CLIP_ERRORS as exc:
        raise PairError(stage, exc) from exc


# -------------------------------------------------------------------------------------- scoring


@dataclass
class Outcome:
    """What :func:`update_metric` did: ``missing`` (weights vanished: the metric is missing for the whole
    run) or ``error`` (this clip failed for this metric), neither when it scored."""

    missing: str | None = None
    error: str | None = None
    exception: BaseException | None = None


def update_metric(
    metric: Metric, gen: Clip, gt: Clip, update: Callable[[Metric, Clip, Clip], None] | None = None
) -> Outcome:
    """``metric.update(gen, gt)`` (or ``update(metric, gen, gt)``); missing weights and
    :data:`CLIP_ERRORS` become the outcome, anything else propagates."""
    try:
        if update is None:
            metric.update(gen, gt)
        else:
            update(metric, gen, gt)
    except MissingWeightsError as exc:
        return Outcome(missing=f"weights missing: {exc}", exception=exc)
    except CLIP_ERRORS as exc:
        return Outcome(error=error_reason(exc), exception=exc)
    return Outcome()


# -------------------------------------------------------------------------------------- results


def missing_result(name: str, reason: str) -> MetricResult:
    """The empty result of a metric that could not be computed (never a zero)."""
    try:
        hib = bool(metric_class(name).higher_is_better)
    except (ImportError, AttributeError, KeyError):
        hib = False
    return MetricResult(name, None, hib, 0, missing_reason=reason)


def collect_results(
    requested: Sequence[str], objects: Mapping[str, Metric], missing: Mapping[str, str]
) -> tuple[dict[str, MetricResult], dict[str, str]]:
    """Every reported number of ``requested`` (``Metric.results()``; a missing metric's empty result with
    its reason) and the extractor hashes ``{"metric.weights": sha256}`` of the computed ones."""
    results: dict[str, MetricResult] = {}
    hashes: dict[str, str] = {}
    for name in requested:
        obj = objects.get(name)
        if obj is None:
            results[name] = missing_result(name, missing.get(name, "not computed"))
            continue
        for r in obj.results():
            results[r.name] = r
        try:
            found = obj.extractor_hashes()
        except MissingWeightsError as exc:
            found = {}
            log.warning("metric %s: cannot hash its weights: %s", name, exc)
        for k, v in found.items():
            hashes[f"{name}.{k}"] = v
    return results, hashes


def metric_intervals(
    objects: Mapping[str, Metric],
    clip_ids: list[str],
    fvd_shards: Callable[[str], Metric | None],
    samples: int,
    seed: int,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float] | None]:
    """Bootstrap interval of every number: ``{result name: (lo, hi) or None}``. One resample matrix over
    ``clip_ids`` serves every metric (a clip a metric did not score counts as absent). Per-clip metrics:
    :meth:`Metric.intervals`. FVD: each resample's statistics are the count-weighted sums of the drawn
    clips' one-clip states (``fvd_shards(clip_id)``) and the distance is recomputed from them."""
    counts = bootstrap_counts(len(clip_ids), samples, seed)
    out: dict[str, tuple[float, float] | None] = {}
    for name, obj in objects.items():
        if name == "fvd":
            from benchmark.metrics.fvd import bootstrap_fvd

            shards: list[Any] = [fvd_shards(c) for c in clip_ids]
            for r in obj.results():
                out[r.name] = bootstrap_fvd(shards, counts, level)[1] if r.value is not None else None
            continue
        out.update(obj.intervals(clip_ids, counts, level))
    return out


def ci_description(n_clips: int, what: str, samples: int, seed: int) -> str:
    """How the intervals were made (rows and results carry it)."""
    return (f"{CI_LEVEL:.0%} percentile bootstrap over the {n_clips} {what}, "
            f"{samples} resamples, seed {seed}; FVD recomputed per resample")


# --------------------------------------------------------------------------------- state as JSON


def encode_state(metric: Metric) -> dict[str, Any]:
    """The metric's declared state (``Metric.add_state``) as JSON-able data (exact round trip)."""
    return {k: encode(v) for k, v in metric.state_dict().items()}


def decode_state(metric: Metric, state: dict[str, Any]) -> Metric:
    """Load :func:`encode_state`'s output into ``metric`` (exactly its declared states) and return it."""
    return metric.load_state_dict({k: decode(v) for k, v in state.items()})


__all__ = [
    "CLIP_ERRORS",
    "MetricUnavailable",
    "Outcome",
    "PairError",
    "align_pair",
    "as_clip",
    "build_metric",
    "build_metrics",
    "ci_description",
    "collect_results",
    "decode_state",
    "encode_state",
    "error_reason",
    "fresh_shard",
    "load_pair",
    "metric_intervals",
    "missing_result",
    "update_metric",
]
