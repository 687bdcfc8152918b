"""The engine interface: WHERE a unit of work runs, never WHAT it does.

An engine runs ``fn(item)`` for picklable module-level functions or picklable callable objects and
reports each task when it finishes, in completion order:

* :meth:`Engine.map` -- ``(index, result)`` for a fixed list of items (shv-bench's per-clip metrics);
* :meth:`Engine.submit` + :meth:`Engine.completed` -- a dynamic task graph (shv-build submits the
  clip groups of a source when its analysis finishes).

Faults: a worker process that dies while running a task (killed, out of memory, segfault) loses only
that task, which is run again up to ``max_retries`` times; after that the task is reported as lost
(:class:`WorkerLostError`, raised by :meth:`map` or, with ``on_lost="return"``, returned in its
place). An exception raised by ``fn`` itself is not retried (the same input fails the same way): it
propagates to the driver.

Logs: records a task logs in a worker process (at the engine's ``log_level`` and above, default
INFO) are sent back with its result and re-emitted in the driver under the same logger names, where
the driver's logger levels and handlers apply (build.log, the console through the progress bars).

Fault injection for tests (worker processes only, never the in-process path), read from the
DRIVER's environment when a task is submitted and sent along with the task:
``SHV_FAULT_KILL=<dir>`` makes every task SIGKILL its own worker process on its first attempt
(a marker file per task in ``<dir>``, on a filesystem the workers share, records the kill);
``SHV_FAULT_KILL_TIMES=<n>`` kills the first ``n`` attempts (default 1);
``SHV_FAULT_KILL_MATCH=<text>[,<text>...]`` limits it to tasks whose key contains one of the texts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from shv_toolkit.core.errors import UsageError

log = logging.getLogger(__name__)

FAULT_ENV = "SHV_FAULT_KILL"
FAULT_TIMES_ENV = "SHV_FAULT_KILL_TIMES"
FAULT_MATCH_ENV = "SHV_FAULT_KILL_MATCH"
#: environment variables a worker on another machine should see like the driver does
FORWARDED_ENV_PREFIXES = ("SHV_",)
FORWARDED_ENV = ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")


class WorkerLostError(RuntimeError):
    """A task's worker process died on every attempt (``attempts`` = 1 + retries)."""

    def __init__(self, key: str, attempts: int, detail: str) -> None:
        super().__init__(f"worker process died {attempts} time(s) running task {key}: {detail}")
        self.key, self.attempts, self.detail = key, attempts, detail

    def __reduce__(self):
        return (WorkerLostError, (self.key, self.attempts, self.detail))


@dataclass
class TaskDone:
    """One finished task: ``result`` is ``fn(item)``, or a :class:`WorkerLostError` when ``lost``."""

    task_id: int
    key: str
    result: Any
    lost: bool = False
    attempts: int = 1


@dataclass
class Task:
    task_id: int
    key: str
    fn: Callable[[Any], Any]
    item: Any
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2
    fault: dict[str, str] | None = None
    attempts: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class TaskOutput:
    """What a worker sends back: the result and the log records the task emitted."""

    result: Any
    logs: list[dict[str, Any]]
    pid: int


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def forwarded_env() -> dict[str, str]:
    """Driver environment variables workers on other machines get too (``SHV_*``, native log levels)."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_ENV}


def fault_settings() -> dict[str, str] | None:
    """The fault-injection settings of the driver's environment (None when off)."""
    if not os.environ.get(FAULT_ENV):
        return None
    return {"dir": os.environ[FAULT_ENV], "times": os.environ.get(FAULT_TIMES_ENV, "1"),
            "match": os.environ.get(FAULT_MATCH_ENV, "")}


def maybe_inject_fault(key: str, fault: dict[str, str] | None) -> None:
    """Test hook (see module doc): SIGKILL this worker process on the task's first attempt(s)."""
    if not fault or not any(m in key for m in fault["match"].split(",")):
        return
    fault_dir, times = fault["dir"], int(fault["times"])
    stem = hashlib.sha256(key.encode()).hexdigest()[:20]
    os.makedirs(fault_dir, exist_ok=True)
    for i in range(times):
        marker = os.path.join(fault_dir, f"{stem}.{i}")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, f"{key}\n{os.getpid()}\n".encode())
        os.close(fd)
        log.warning("fault injection: killing worker %d running %s (attempt %d)", os.getpid(), key, i + 1)
        for h in logging.getLogger().handlers:
            h.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class _ListHandler(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({
            "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
            "msg": record.getMessage(), "created": record.created, "pathname": record.pathname,
            "lineno": record.lineno, "funcName": record.funcName,
            "exc_text": self.format_exc(record), "process": record.process,
            "processName": record.processName, "threadName": record.threadName,
        })

    @staticmethod
    def format_exc(record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return logging.Formatter().formatException(record.exc_info)
        return record.exc_text


def run_task(fn: Callable[[Any], Any], item: Any, key: str, log_level: int,
             fault: dict[str, str] | None = None) -> TaskOutput:
    """Worker side of every engine: fault hook, then ``fn(item)`` with its log records captured."""
    maybe_inject_fault(key, fault)
    root = logging.getLogger()
    handler = _ListHandler(log_level)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level or logging.WARNING, log_level))
    try:
        result = fn(item)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return TaskOutput(result, handler.records, os.getpid())


def replay_logs(records: Iterable[dict[str, Any]]) -> None:
    """Re-emit worker log records in the driver (same logger names and levels)."""
    for r in records:
        logger = logging.getLogger(r["name"])
        if not logger.isEnabledFor(r["levelno"]):
            continue
        rec = logging.makeLogRecord({**r, "args": None, "exc_info": None})
        logger.handle(rec)


class Engine(ABC):
    """Base class of the engines; subclasses implement :meth:`_submit` and :meth:`completed`."""

    name: str = "engine"
    #: True when tasks run in the calling process (no pickling, no retries, progress bars shown)
    in_process: bool = False

    def __init__(self, workers: int = 1, max_retries: int = 2, log_level: int | None = None) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise UsageError(f"workers must be an integer >= 1, got {workers!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.workers = int(workers)
        self.max_retries = int(max_retries)
        self.log_level = logging.INFO if log_level is None else int(log_level)
        self._next_id = 0
        self.stats = {"submitted": 0, "finished": 0, "retried": 0, "lost": 0}

    # ------------------------------------------------------------------ interface
    @property
    def capacity(self) -> int:
        """How many tasks can run at once (used by callers to throttle submissions)."""
        return self.workers

    @property
    def cores_per_task(self) -> int:
        """CPU cores one task may keep busy with threads of its own (the engine's thread policy)."""
        return 1

    @property
    def gpus(self) -> int | None:
        """GPUs the engine schedules (None: not managed, tasks use whatever device they are given)."""
        return None

    def submit(self, fn: Callable[[Any], Any], item: Any, *, key: str | None = None,
               num_cpus: float = 1, num_gpus: float = 0, max_retries: int | None = None) -> int:
        """Queue ``fn(item)``; returns its task id. ``num_cpus``/``num_gpus`` are resource hints
        (Ray schedules by them; the local engine runs one task per worker process).
        ``max_retries``: this task's reruns after a worker death (default: the engine's)."""
        tid = self._next_id
        self._next_id += 1
        retries = self.max_retries if max_retries is None else int(max_retries)
        if retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {retries}")
        task = Task(tid, key if key is not None else f"{getattr(fn, '__name__', type(fn).__name__)}:{tid}",
                    fn, item, float(num_cpus), float(num_gpus), retries, fault_settings())
        self.stats["submitted"] += 1
        self._submit(task)
        return tid

    @abstractmethod
    def _submit(self, task: Task) -> None: ...

    @abstractmethod
    def completed(self) -> Iterator[TaskDone]:
        """Finished tasks in completion order until none is pending; tasks submitted while
        iterating are included. Exceptions raised by a task's ``fn`` propagate from here."""

    @abstractmethod
    def pending(self) -> int:
        """Tasks submitted and not yet reported by :meth:`completed`."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, num_cpus: float = 1,
            num_gpus: float = 0, on_lost: Literal["raise", "return"] = "raise",
            max_retries: int | None = None) -> Iterator[tuple[int, Any]]:
        """``(index into items, fn(item))`` in completion order. A task whose worker died on every
        attempt raises :class:`WorkerLostError` (``on_lost="raise"``) or yields it as the result.
        If the caller stops early or a task raises, the remaining tasks are cancelled."""
        if self.pending():
            raise RuntimeError("map() needs an idle engine (tasks are still pending)")
        index: dict[int, int] = {}
        for i, item in enumerate(items):
            index[self.submit(fn, item, key=f"{getattr(fn, '__name__', type(fn).__name__)}[{i}]",
                              num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)] = i
        try:
            for done in self.completed():
                if done.lost and on_lost == "raise":
                    raise done.result
                yield index[done.task_id], done.result
        finally:
            if self.pending():  # an error, or the caller stopped early: drop the rest
                self.cancel()

    @abstractmethod
    def cancel(self) -> None:
        """Drop every pending task (running ones are stopped); the engine stays usable."""

    @abstractmethod
    def close(self) -> None:
        """Release workers (and a Ray instance the engine started)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} engine, {self.workers} worker(s)"

    # ------------------------------------------------------------------ helpers for subclasses
    def _finish(self, task: Task, out: TaskOutput) -> TaskDone:
        replay_logs(out.logs)
        self.stats["finished"] += 1
        return TaskDone(task.task_id, task.key, out.result, attempts=task.attempts)

    def _lost_or_retry(self, task: Task, detail: str) -> TaskDone | None:
        """A worker died running ``task``: None if it is to be resubmitted, else its lost report."""
        task.history.append(detail)
        if task.attempts <= task.max_retries:
            self.stats["retried"] += 1
            log.warning("worker died running %s (attempt %d of %d): %s; retrying", task.key,
                        task.attempts, task.max_retries + 1, detail)
            return None
        self.stats["lost"] += 1
        log.error("task %s lost: its worker died on all %d attempts (%s)", task.key, task.attempts, detail)
        return TaskDone(task.task_id, task.key, WorkerLostError(task.key, task.attempts, detail),
                        lost=True, attempts=task.attempts)
