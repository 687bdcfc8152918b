"""The work units of a build, their results and the resources they declare.

* :class:`AnalyseTask` -- one per source: fetch, one analysis decode, planning, audio caches; returns a
  :class:`PlannedSource` (its candidate clips in groups) or a failed :class:`SourceResult`.
* :class:`RenderTask` -- one per :class:`ClipGroup`: vocals over the group's spans, render, score,
  write; returns a :class:`GroupResult`.

Tasks are picklable and engine-agnostic: an engine runs them where it likes, with the
:class:`Resources` they declare; their threads (:class:`TaskThreads`) follow from the cores the engine
gives a task. Results round-trip through :mod:`shv_toolkit.core.jsoncodec` for the completion markers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shv_toolkit.config import BuildConfig, ClipConfig
from shv_toolkit.inputs import SourceSpec
from shv_toolkit.stages.clips import ClipSpec

#: default clips per render task: 24 clips = 48 s of video, 5-10 s of work on one core; a killed build
#: redoes at most one group per worker (perf/RESULTS.md, group size)
GROUP_CLIPS = 24
#: rate of the mono mix a build caches for separation (a separator may declare another ``input_rate``)
MIX_RATE = 44100
#: most helper threads a task starts on its own
MAX_AUTO_THREADS = 8


@dataclass(frozen=True)
class Resources:
    """What one task asks its engine for (Ray schedules by it; the local engine runs one task per
    worker process)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class TaskThreads:
    """Threads inside one task. ``helpers``: clip threads scoring and encoding beside the decoding
    thread (0: everything in one thread); ``decoder``: FFmpeg threads of the render decode (0:
    FFmpeg's choice)."""

    helpers: int
    decoder: int

    @classmethod
    def resolve(cls, clips: ClipConfig, cores: int) -> TaskThreads:
        """``clips.threads`` / ``clips.decoder_threads``, or for ``None`` the automatic choice on
        ``cores`` cores per task: helpers = cores in [1, 8]; one decoder thread when the task's own
        thread and its helpers already fill the cores (frame threads cost 1.3-1.6x the CPU time of
        one thread, perf/RESULTS.md), else FFmpeg's choice."""
        cores = max(1, int(cores))
        helpers = int(clips.threads) if clips.threads is not None else max(1, min(MAX_AUTO_THREADS, cores))
        if clips.decoder_threads is not None:
            decoder = int(clips.decoder_threads)
        else:
            decoder = 1 if helpers == 0 or helpers + 1 > cores else 0
        return cls(helpers, decoder)


@dataclass
class SourceResult:
    """Everything one source contributes to the manifests: its row, its clip rows, stage timings."""

    source: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class PlannedSource:
    """A source's analysis: its manifest row so far, the stage timings and its clip groups."""

    source: dict[str, Any]
    timings: dict[str, float]
    groups: list[list[ClipSpec]]
    group_clips: int

    def clip_ids(self, index: int) -> list[str]:
        return [c.clip_id for c in self.groups[index]]


@dataclass
class ClipGroup:
    """One render task: consecutive candidate clips of one source."""

    source_id: str
    index: int
    n_groups: int
    local_path: str  # the source file: absolute, or relative to --out (downloads)
    specs: list[ClipSpec]


@dataclass
class GroupResult:
    """A render task's clip rows in the group's order, or its one-line error."""

    source_id: str
    index: int
    clips: list[dict[str, Any]]
    timings: dict[str, float]
    vocals_backend: str = "none"
    error: str | None = None


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


@dataclass(frozen=True)
class AnalyseTask:
    """Picklable per-source task: ``AnalyseTask(cfg, out, threads)(spec)``."""

    cfg: BuildConfig
    out: str
    threads: TaskThreads
    group_clips: int = GROUP_CLIPS
    progress: bool = False

    @property
    def resources(self) -> Resources:
        return Resources(cpus=1.0)

    def __call__(self, spec: SourceSpec) -> PlannedSource | SourceResult:
        from shv_toolkit.build.processor import processor

        return processor(self.cfg, self.out, self.threads, self.progress).analyse(spec, self.group_clips)


@dataclass(frozen=True)
class RenderTask:
    """Picklable per-clip-group task: ``RenderTask(cfg, out, threads)(group)``. Asks for a GPU when
    separation runs on CUDA."""

    cfg: BuildConfig
    out: str
    threads: TaskThreads
    progress: bool = False

    @property
    def resources(self) -> Resources:
        cuda = str(self.cfg.vocals.device).startswith("cuda") and self.cfg.vocals.backend != "none"
        return Resources(cpus=1.0, gpus=1.0 if cuda else 0.0)

    def __call__(self, group: ClipGroup) -> GroupResult:
        from shv_toolkit.build.processor import processor

        return processor(self.cfg, self.out, self.threads, self.progress).render_group(group)
