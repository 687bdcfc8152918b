"""Helper threads of a build task: calls run inline or on a few threads, with bounded backlog.

The work handed to helper threads (x264 encoding, mediapipe graphs, OpenCV and NumPy on frames, torch
ops) releases the GIL, so a task keeps several cores busy while its own thread goes on decoding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class HelperCalls:
    """Runs ``fn(*args)`` calls inline (``threads=0``: :meth:`submit` returns the result) or on
    ``threads`` helper threads (:meth:`submit` returns a :class:`Future`; with one thread the calls
    run in submission order). At most ``max_pending`` calls wait or run at once: :meth:`submit` blocks
    for a free slot, so the frames a call holds stay bounded.

    The first failure of a helper call is raised by the next :meth:`submit` and by :meth:`join`.
    Leaving the ``with`` block on an exception cancels the calls not yet started; those running finish.
    """

    def __init__(self, threads: int, name: str, max_pending: int | None = None) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name) if threads else None
        self._slots = threading.BoundedSemaphore(max_pending or threads + 1)
        self._error: BaseException | None = None

    def _done(self, fut: Future) -> None:
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()
        self._slots.release()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            return fn(*args)
        self._raise()
        self._slots.acquire()
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(self._done)
        return fut

    def join(self) -> None:
        """Wait for every call; raise the first failure."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._raise()

    @staticmethod
    def value(v: Any) -> Any:
        """The result of what :meth:`submit` returned (a value, or a Future to wait for)."""
        return v.result() if isinstance(v, Future) else v

    def __enter__(self) -> HelperCalls:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
