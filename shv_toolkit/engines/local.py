"""Local engine: the calling process (workers=1) or a pool of worker processes on this machine."""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from shv_toolkit.config import BuildConfig
from shv_toolkit.inputs import SourceSpec

log = logging.getLogger(__name__)

_WORKER_PROCESSOR = None


def _init_worker(cfg: BuildConfig, out: str) -> None:
    global _WORKER_PROCESSOR
    from shv_toolkit.pipeline import BuildLayout, SourceProcessor

    logging.basicConfig(level=logging.WARNING)
    _WORKER_PROCESSOR = SourceProcessor(cfg, BuildLayout(Path(out)), progress=False)


def _run_in_worker(spec: SourceSpec):
    assert _WORKER_PROCESSOR is not None, "worker not initialised"
    return _WORKER_PROCESSOR(spec)


@dataclass
class LocalEngine:
    workers: int
    cfg: BuildConfig
    out: Path | None
    progress: bool = True

    def __call__(self, fn: Callable, specs: list[SourceSpec]) -> Iterable:
        if self.workers <= 1 or len(specs) <= 1:
            return (fn(s) for s in specs)
        return self._pool(specs)

    def _pool(self, specs: list[SourceSpec]) -> Iterator:
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked mediapipe/torch state
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.cfg, str(self.out))) as pool:
            pending: set[Future] = {pool.submit(_run_in_worker, s) for s in specs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
