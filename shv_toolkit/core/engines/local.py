"""Local engine: the calling process (``workers=1``) or ``workers`` worker processes on this machine.

With ``workers > 1`` every worker is its own single-process :class:`ProcessPoolExecutor` (spawned:
fresh interpreters, no forked mediapipe/torch state). A worker that dies breaks only its own
executor, so the engine knows exactly which task was lost: that task is resubmitted to a fresh
worker (up to ``max_retries`` times) while the other workers carry on undisturbed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from shv_toolkit.core.engines.base import Engine, Task, TaskDone, run_task, usable_cores

log = logging.getLogger(__name__)


class LocalEngine(Engine):
    """``workers=1``: tasks run one after the other in the calling process (no pickling, fastest for
    small jobs and tests). ``workers=N``: N spawned worker processes, one task each at a time."""

    name = "local"

    def __init__(self, workers: int = 1, max_retries: int = 2, log_level: int | None = None) -> None:
        super().__init__(workers, max_retries, log_level)
        self._queue: deque[Task] = deque()
        self._slots: list[ProcessPoolExecutor | None] = [None] * self.workers
        self._running: dict[Future, tuple[int, Task]] = {}
        self._ctx = mp.get_context("spawn")
        self.in_process = self.workers == 1

    def _submit(self, task: Task) -> None:
        self._queue.append(task)

    def pending(self) -> int:
        return len(self._queue) + len(self._running)

    @property
    def cores_per_task(self) -> int:
        """The usable cores shared out among the worker processes (at least 1)."""
        return max(1, usable_cores() // self.workers)

    def describe(self) -> str:
        if self.workers == 1:
            return "local engine, in-process (1 worker)"
        return f"local engine, {self.workers} worker processes"

    def completed(self) -> Iterator[TaskDone]:
        if self.workers == 1:
            yield from self._sequential()
            return
        while self._queue or self._running:
            self._dispatch()
            done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
            for fut in done:
                slot, task = self._running.pop(fut)
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    detail = self._retire(slot)
                    report = self._lost_or_retry(task, detail)
                    if report is None:
                        self._queue.appendleft(task)
                    else:
                        yield report
                elif exc is not None:
                    raise exc
                else:
                    yield self._finish(task, fut.result())

    def _sequential(self) -> Iterator[TaskDone]:
        while self._queue:
            task = self._queue.popleft()
            task.attempts = 1
            result = task.fn(task.item)
            self.stats["finished"] += 1
            yield TaskDone(task.task_id, task.key, result)

    def _dispatch(self) -> None:
        busy = {slot for slot, _ in self._running.values()}
        for slot in range(self.workers):
            if not self._queue:
                return
            if slot in busy:
                continue
            ex = self._slots[slot]
            if ex is None:
                ex = self._slots[slot] = ProcessPoolExecutor(1, mp_context=self._ctx)
            task = self._queue.popleft()
            task.attempts += 1
            fut = ex.submit(run_task, task.fn, task.item, task.key, self.log_level, task.fault)
            self._running[fut] = (slot, task)

    def _retire(self, slot: int) -> str:
        """Drop the broken executor of ``slot``; returns how its worker ended."""
        ex = self._slots[slot]
        self._slots[slot] = None
        detail = "worker process ended abruptly"
        if ex is not None:
            codes = [p.exitcode for p in (getattr(ex, "_processes", None) or {}).values()]
            if codes:
                detail += f" (exit code {codes[0]})"
            ex.shutdown(wait=True, cancel_futures=True)
        return detail

    def cancel(self) -> None:
        """Drop queued tasks and terminate the workers of running ones (fresh ones start on demand)."""
        self._queue.clear()
        for slot in sorted({slot for slot, _ in self._running.values()}):
            ex = self._slots[slot]
            self._slots[slot] = None
            if ex is not None:
                for proc in list((getattr(ex, "_processes", None) or {}).values()):
                    proc.terminate()
                ex.shutdown(wait=True, cancel_futures=True)
        self._running.clear()

    def close(self) -> None:
        """Stop the workers; tasks still running (after an error in the driver) are terminated."""
        self.cancel()
        for slot, ex in enumerate(self._slots):
            if ex is not None:
                ex.shutdown(wait=True, cancel_futures=True)
                self._slots[slot] = None
