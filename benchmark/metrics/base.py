"""Common ground of every metric: the clip container, the alignment rule and the streaming API.

Each metric module provides a pure function (e.g. ``ssim_clip(gen, gt) -> float``) and a thin
stateful class derived from :class:`Metric` with ``update / compute / reset / merge`` and a
``higher_is_better`` flag, like torchmetrics.

Alignment rule (documented once, applied by :func:`align`):

* Frames: both clips are compared on their common frames, ``T = min(T_gen, T_gt)`` from the start.
  If the lengths differ by more than ``max_length_mismatch`` frames (default 2) the pair is refused
  with :class:`AlignmentError` rather than silently compared on a fraction of the clip.
* Size: the generated frames are resized to the ground truth's size (bilinear, with antialiasing
  when shrinking); the ground truth is never resampled.
* Audio: the ground truth's audio is the driving audio; metrics that need audio use it.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shv_toolkit.core.errors import ShvError

log = logging.getLogger(__name__)


class AlignmentError(ShvError):
    """Generated and ground-truth clips cannot be compared under the alignment rule."""


class MetricInputError(ShvError):
    """A metric got input it cannot score (wrong dtype/shape, no face, no audio...)."""


@dataclass
class Clip:
    """A video clip in memory: ``frames`` (T, H, W, 3) uint8 RGB, optional mono float32 audio."""

    frames: np.ndarray
    fps: float = 25.0
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    clip_id: str = ""
    path: str | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise MetricInputError(
                f"clip {self.clip_id or self.path}: frames must be (T, H, W, 3) uint8, "
                f"got {getattr(f, 'shape', None)} {getattr(f, 'dtype', type(f).__name__)}"
            )
        if f.shape[0] == 0:
            raise MetricInputError(f"clip {self.clip_id or self.path}: no frames")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @classmethod
    def load(
        cls,
        path: str | Path,
        fps: float = 25.0,
        sample_rate: int = 16000,
        audio_path: str | Path | None = None,
        clip_id: str | None = None,
    ) -> Clip:
        """Decode a video file (resampled to ``fps``) and its audio (or ``audio_path``)."""
        from shv_toolkit.core import media
        from shv_toolkit.core.errors import MediaError

        path = Path(path)
        frames = media.read_video(path, fps=fps)
        audio = None
        src = Path(audio_path) if audio_path else path
        try:
            audio = media.read_audio(src, sample_rate=sample_rate)
        except MediaError:
            if audio_path:
                raise
            audio = None
        return cls(frames, fps, audio, sample_rate, clip_id or path.stem, str(path))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to ``size`` = (height, width), bilinear."""
    import cv2

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    shrinking = h < frames.shape[1] or w < frames.shape[2]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def align(generated: Clip, ground_truth: Clip, max_length_mismatch: int = 2) -> tuple[Clip, Clip]:
    """Apply the alignment rule in this module's docstring; returns new clips of equal shape."""
    if abs(generated.fps - ground_truth.fps) > 1e-3:
        raise AlignmentError(
            f"{ground_truth.clip_id}: frame rates differ ({generated.fps} vs {ground_truth.fps}); "
            "load both at the protocol's fps"
        )
    t_gen, t_gt = generated.n_frames, ground_truth.n_frames
    if abs(t_gen - t_gt) > max_length_mismatch:
        raise AlignmentError(
            f"{ground_truth.clip_id}: generated clip has {t_gen} frames, ground truth {t_gt} "
            f"(more than {max_length_mismatch} apart)"
        )
    t = min(t_gen, t_gt)
    g = resize_frames(generated.frames[:t], ground_truth.size)
    r = ground_truth.frames[:t]
    n_audio = None
    if ground_truth.audio is not None:
        n_audio = int(round(t / ground_truth.fps * ground_truth.sample_rate))
    gen = Clip(g, generated.fps, generated.audio, generated.sample_rate, generated.clip_id, generated.path)
    gt = Clip(
        r,
        ground_truth.fps,
        None if ground_truth.audio is None else ground_truth.audio[:n_audio],
        ground_truth.sample_rate,
        ground_truth.clip_id,
        ground_truth.path,
    )
    return gen, gt


@dataclass
class MetricResult:
    """Aggregate of one metric over a set of clips."""

    name: str
    value: float | None
    higher_is_better: bool
    n_clips: int  # clips the metric was given (scored or not)
    per_clip: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    missing_reason: str | None = None  # set when the metric could not be computed at all
    n_failed: int = 0  # of n_clips, those whose value is not finite: left out of ``value``

    @property
    def n_scored(self) -> int:
        """Clips whose value entered the aggregate."""
        return self.n_clips - self.n_failed

    def to_dict(self, per_clip: bool = False) -> dict[str, Any]:
        d = {
            "name": self.name,
            "value": self.value,
            "higher_is_better": self.higher_is_better,
            "n_clips": self.n_clips,
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "extras": self.extras,
            "missing_reason": self.missing_reason,
        }
        if per_clip:
            d["per_clip"] = self.per_clip
        return d


CI_LEVEL = 0.95
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_counts(n_clips: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``(samples, n_clips)`` int64: how often each clip is drawn in each resample of ``n_clips`` clips
    with replacement (``numpy.random.default_rng(seed)``, so a seed and a clip count give the same
    resamples on every machine; every method of one manifest gets the same resamples: paired)."""
    if n_clips < 1 or samples < 1:
        raise ValueError(f"bootstrap needs at least 1 clip and 1 resample, got {n_clips} and {samples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clips, size=(samples, n_clips))
    counts = np.zeros((samples, n_clips), dtype=np.int64)
    np.add.at(counts, (np.arange(samples)[:, None], draws), 1)
    return counts


def bootstrap_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of the finite ``values`` (one per clip, NaN = not scored) in each resample of ``counts``;
    NaN for a resample that drew no finite value."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    w = np.asarray(counts, dtype=np.float64) * ok
    n = w.sum(axis=1)
    sums = w @ np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.where(n > 0, n, 1.0), np.nan)


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval ``(lo, hi)`` of the finite replicates; None with fewer than 2."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _as_float(v: Any) -> float:
    return float(v) if isinstance(v, int | float | np.floating | np.integer) else math.nan


#: how :meth:`Metric.merge` combines one state of two shards (``add_state(..., reduce=...)``):
#: ``"union"``: dicts keyed by clip id, united; a key in both shards is an error (counted twice);
#: ``"sum"``: numbers and arrays added (dicts of them: key by key); ``"cat"``: lists concatenated.
#: A callable ``(mine, theirs) -> merged`` is accepted too.
REDUCTIONS = ("union", "sum", "cat")
Reduce = str | Callable[[Any, Any], Any]


def _reduce_sum(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise ValueError(f"cannot sum states with keys {sorted(a)} and {sorted(b)}")
        return {k: _reduce_sum(v, b[k]) for k, v in a.items()}
    return a + b


def merge_state(name: str, reduce: Reduce, mine: Any, theirs: Any, metric: str = "") -> Any:
    """One state of two shards combined by ``reduce`` (see :data:`REDUCTIONS`); inputs are not modified."""
    if callable(reduce):
        return reduce(mine, theirs)
    if reduce == "union":
        dup = mine.keys() & theirs.keys()
        if dup:
            raise ValueError(f"{metric or name}: shards share clip ids {sorted(dup)[:3]}")
        return {**mine, **theirs}
    if reduce == "sum":
        return _reduce_sum(mine, theirs)
    if reduce == "cat":
        return list(mine) + list(theirs)
    raise ValueError(f"unknown reduction {reduce!r} of state {name}; choose from {', '.join(REDUCTIONS)}")


class Metric(ABC):
    """Streaming metric: ``update`` per clip pair, ``compute`` the aggregate, ``merge`` shards.

    Subclasses declare ``name`` and ``higher_is_better``, and their streaming state once, in
    ``__init__``, with :meth:`add_state` (torchmetrics-style: a name, its empty value and how two
    shards combine). ``reset``, ``merge``, :meth:`state_dict` / :meth:`load_state_dict` (the
    bench's per-clip cache) are generic over the declared states, so ``merge`` of two shards equals
    one pass over their union. A subclass overrides ``merge`` only to check settings first.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def __init__(self) -> None:
        self.__dict__.setdefault("_states", {})
        self.reset()

    def add_state(self, name: str, default: Any, reduce: Reduce) -> None:
        """Declare streaming state ``name``: ``default`` is its empty value (copied on every reset),
        ``reduce`` how two shards combine (:data:`REDUCTIONS` or a callable)."""
        if not callable(reduce) and reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduce!r} of state {name}; choose from {', '.join(REDUCTIONS)}")
        states: dict[str, tuple[Any, Reduce]] = self.__dict__.setdefault("_states", {})
        if name in states:
            raise ValueError(f"{type(self).__name__}: state {name!r} declared twice")
        states[name] = (copy.deepcopy(default), reduce)
        setattr(self, name, copy.deepcopy(default))

    def state_names(self) -> list[str]:
        """The declared states, in declaration order."""
        return list(self.__dict__.get("_states", {}))

    def reset(self) -> None:
        """Every declared state back to its default."""
        for name, (default, _) in self.__dict__.get("_states", {}).items():
            setattr(self, name, copy.deepcopy(default))

    def state_dict(self) -> dict[str, Any]:
        """``{state: value}`` of the declared states (the values themselves, not copies)."""
        return {k: getattr(self, k) for k in self.state_names()}

    def load_state_dict(self, state: dict[str, Any]) -> Metric:
        """Set the declared states from ``state`` (exactly those names) and return ``self``."""
        expected = self.state_names()
        if set(state) != set(expected):
            raise ValueError(f"state of {self.name} has {sorted(state)}, expected {sorted(expected)}")
        for k in expected:
            setattr(self, k, state[k])
        return self

    @abstractmethod
    def update(self, generated: Clip, ground_truth: Clip) -> float | None:
        """Add one clip pair; returns its per-clip value when the metric has one."""

    @abstractmethod
    def compute(self) -> MetricResult: ...

    def results(self) -> list[MetricResult]:
        """Every reported number of this metric. Most report one; LSE reports LSE-D and LSE-C,
        LMD reports mouth and full-face LMD. Tables and the CLI use this, not ``compute``."""
        return [self.compute()]

    def merge(self, other: Metric) -> Metric:
        """Fold ``other``'s declared states into this one (in place, by each state's reduction) and
        return ``self``; nothing changes when any state cannot be merged."""
        self._check_merge(other)
        merged = {name: merge_state(name, reduce, getattr(self, name), getattr(other, name), self.name)
                  for name, (_, reduce) in self.__dict__.get("_states", {}).items()}
        for name, value in merged.items():
            setattr(self, name, value)
        return self

    def extractor_hashes(self) -> dict[str, str]:
        """SHA-256 of every weight file this metric's result depends on (``{logical name: sha256}``).

        Optional hook: metrics without learned extractors (SSIM, PSNR, CPBD) return ``{}``. The
        evaluation driver stores these beside the protocol so results are comparable exactly when
        both match."""
        return {}

    def intervals(
        self, clip_ids: list[str], counts: np.ndarray, level: float = CI_LEVEL
    ) -> dict[str, tuple[float, float] | None]:
        """Bootstrap confidence interval of every result of :meth:`results` that is a mean of per-clip
        values: ``{result name: (lo, hi)}`` (None when it has none). ``counts`` (resamples x clips) are
        the multiplicities of ``clip_ids`` in each resample (:func:`bootstrap_counts`); a clip this
        metric did not score, or scored non-finite, counts as absent in every resample. Set-level metrics
        (FVD) override this."""
        out: dict[str, tuple[float, float] | None] = {}
        for r in self.results():
            if r.value is None or not r.per_clip:
                out[r.name] = None
                continue
            vals = np.array([_as_float(r.per_clip.get(c)) for c in clip_ids], dtype=np.float64)
            out[r.name] = percentile_interval(bootstrap_means(vals, counts), level)
        return out

    def _check_merge(self, other: Metric) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")


class PerClipMeanMetric(Metric):
    """A metric whose aggregate is the mean of a per-clip value (SSIM, PSNR, CPBD, LMD, ...).

    State: ``per_clip`` (clip id -> value). Merging takes the union; the same clip id in both shards
    is an error (it would be counted twice).
    """

    per_clip: dict[str, float]

    def __init__(self) -> None:
        self.add_state("per_clip", {}, "union")
        super().__init__()

    @abstractmethod
    def score(self, generated: Clip, ground_truth: Clip) -> float:
        """The pure per-clip function, on aligned clips."""

    max_length_mismatch: int = 2  # subclasses may set it from their protocol

    def update(self, generated: Clip, ground_truth: Clip) -> float:
        gen, gt = align(generated, ground_truth, self.max_length_mismatch)
        value = float(self.score(gen, gt))
        key = gt.clip_id or f"clip{len(self.per_clip):06d}"
        if key in self.per_clip:
            raise ValueError(f"{self.name}: clip id {key!r} was already scored")
        self.per_clip[key] = value
        return value

    def aggregate(self, values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    def compute(self) -> MetricResult:
        vals = list(self.per_clip.values())
        failed = [k for k, v in self.per_clip.items() if not math.isfinite(v)]
        res = MetricResult(
            self.name, self.aggregate(vals), self.higher_is_better, len(vals), dict(self.per_clip),
            n_failed=len(failed),
        )
        if failed:
            res.extras["failed_clips"] = failed  # non-finite values, left out of the mean
        return res
