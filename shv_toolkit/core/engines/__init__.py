"""Engines decide WHERE a unit of work runs; they know nothing of the stages.

``make_engine("local" | "ray", workers, ray_address)`` returns an :class:`Engine`:

* ``.map(fn, items, *, num_cpus=1, num_gpus=0)`` -> iterator of ``(index into items, fn(item))``
  in completion order (``fn``: a picklable module-level function or picklable callable object);
* ``.submit(fn, item, key=..., num_cpus=..., num_gpus=...)`` + ``.completed()`` for task graphs;
* ``.close()`` or use it as a context manager.

See :mod:`shv_toolkit.core.engines.base` for retries, lost workers, log forwarding and fault injection.
"""

from __future__ import annotations

from shv_toolkit.core.engines.base import Engine, TaskDone, WorkerLostError
from shv_toolkit.core.errors import UsageError

ENGINES = ("local", "ray")


def make_engine(name: str, workers: int = 1, ray_address: str | None = None, *, max_retries: int = 2,
                log_level: int | None = None, **options) -> Engine:
    """An engine by name. ``workers``: worker processes (local) or CPUs of a private Ray instance
    (ray without ``ray_address``). ``ray_address``: ``"auto"`` or ``"host:port"`` of a running Ray
    cluster (ray only). ``max_retries``: reruns of a task whose worker process died. ``log_level``:
    lowest level of worker log records forwarded to the driver (default INFO).
    Other ``options`` go to the engine class (ray: ``num_gpus``, ``object_store_memory``).
    Every bad setting (workers < 1, an address without ray, unknown options) raises UsageError here."""
    if name == "local":
        if ray_address:
            raise UsageError("--ray-address needs --engine ray")
        if options:
            raise UsageError(f"unknown option(s) for the local engine: {', '.join(sorted(options))}")
        from shv_toolkit.core.engines.local import LocalEngine

        return LocalEngine(workers=workers, max_retries=max_retries, log_level=log_level)
    if name == "ray":
        from shv_toolkit.core.engines.ray_engine import RayEngine

        return RayEngine(workers=workers, ray_address=ray_address, max_retries=max_retries,
                         log_level=log_level, **options)
    raise UsageError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")


__all__ = ["ENGINES", "Engine", "TaskDone", "WorkerLostError", "make_engine"]
