"""Ray engine: tasks run as Ray tasks on a local Ray instance or an existing Ray cluster.

* ``ray_address=None``: start a private single-node Ray instance with ``workers`` CPUs, bound to
  127.0.0.1 only (GCS, raylet, object manager and workers listen on the loopback interface), no
  dashboard, no usage statistics, shut down by :meth:`RayEngine.close`.
* ``ray_address="auto"`` or ``"host:port"``: connect to a running cluster (``ray start --head``
  on the head node); every node needs this package installed and the build's ``--out`` directory
  (and the inputs) on a shared filesystem at the same path. Scheduling follows the resource hints
  (``num_cpus``/``num_gpus``) of each task, so the cluster's size, not ``workers``, sets the
  parallelism.
* A process already connected to Ray (``ray.is_initialized()``) keeps its connection; the engine
  neither starts nor stops anything then.

A worker that dies is handled by Ray's own task retries (``max_retries``); when they are exhausted
the task is reported lost (:class:`~shv_toolkit.core.engines.base.WorkerLostError`). Exceptions raised by
a task are not retried and propagate to the driver. Workers' log records come back with each result
(their stdout/stderr stay in Ray's session logs, so they do not scribble over the progress bars).
Driver variables ``SHV_*``, ``GLOG_minloglevel`` and ``TF_CPP_MIN_LOG_LEVEL`` (as set when the engine
connects) are set in the workers of the job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from shv_toolkit.core.engines.base import Engine, Task, TaskDone, WorkerLostError, forwarded_env, run_task
from shv_toolkit.core.errors import UsageError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def _loopback_only() -> None:
    """Make a Ray instance started from this process bind to 127.0.0.1 only.

    Ray resolves a "localhost" node address to the machine's outward IP unless its cluster mode is
    off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, what Ray does on macOS/Windows to stay on the
    loopback interface). The variable is read when ``ray`` is imported, so the module constant is
    set as well in case ``ray`` was imported before.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


class RayEngine(Engine):
    name = "ray"

    def __init__(self, workers: int = 1, ray_address: str | None = None, max_retries: int = 2,
                 log_level: int | None = None, num_gpus: int | None = None,
                 object_store_memory: int | None = None) -> None:
        super().__init__(workers, max_retries, log_level)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a declared dependency
            raise UsageError(f"--engine ray needs the 'ray' package: {exc}") from exc
        self._ray = ray
        self._owns: str | None = None
        self._job_env = forwarded_env()
        if ray.is_initialized():
            log.info("ray: reusing this process's existing Ray connection")
        elif ray_address:
            if ray_address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"):
                _loopback_only()  # a head started with --node-ip-address 127.0.0.1: stay on loopback
            ray.init(address=ray_address, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": self._job_env} if self._job_env else None)
            self._owns = "connection"
            log.info("ray: connected to %s (%s CPUs)", ray_address, ray.cluster_resources().get("CPU"))
        else:
            _loopback_only()
            # address="local": always a new private instance, never one found via /tmp/ray
            ray.init(address="local", num_cpus=self.workers, num_gpus=num_gpus, include_dashboard=False,
                     _node_ip_address=LOOPBACK, log_to_driver=False, configure_logging=False,
                     object_store_memory=object_store_memory,
                     runtime_env={"env_vars": self._job_env} if self._job_env else None)
            self._owns = "instance"
            log.info("ray: started a local instance with %d CPUs on %s", self.workers, LOOPBACK)
        self._remote = ray.remote(run_task)
        self._refs: dict[Any, Task] = {}
        self._fn_refs: dict[int, tuple[Callable, Any]] = {}

    @property
    def capacity(self) -> int:
        if self._owns == "instance":
            return self.workers
        return max(1, int(self._ray.cluster_resources().get("CPU", self.workers)))

    @property
    def cores_per_task(self) -> int:
        """1: Ray runs one task per CPU it schedules, so a task's own threads would overbook it."""
        return 1

    @property
    def gpus(self) -> int:
        return int(self._ray.cluster_resources().get("GPU", 0))

    def describe(self) -> str:
        where = {"instance": f"local instance on {LOOPBACK}", "connection": "cluster",
                 None: "existing connection"}[self._owns]
        return f"ray engine, {where}, {self.capacity} CPU(s)"

    def node_addresses(self) -> list[str]:
        """IP addresses of the live nodes (a private instance has only 127.0.0.1)."""
        return sorted({n["NodeManagerAddress"] for n in self._ray.nodes() if n.get("Alive")})

    def pending(self) -> int:
        return len(self._refs)

    def _fn_ref(self, fn: Callable) -> Any:
        """Put each distinct task function in the object store once (configs are not re-sent)."""
        hit = self._fn_refs.get(id(fn))
        if hit is None or hit[0] is not fn:
            hit = self._fn_refs[id(fn)] = (fn, self._ray.put(fn))
        return hit[1]

    def _submit(self, task: Task) -> None:
        opts: dict[str, Any] = {
            "num_cpus": task.num_cpus, "num_gpus": task.num_gpus, "max_retries": task.max_retries,
            "retry_exceptions": False, "name": task.key[:200],
        }
        task.attempts = 1
        ref = self._remote.options(**opts).remote(self._fn_ref(task.fn), task.item, task.key, self.log_level,
                                                  task.fault)
        self._refs[ref] = task

    def completed(self) -> Iterator[TaskDone]:
        from ray.exceptions import NodeDiedError, ObjectLostError, OutOfMemoryError, WorkerCrashedError

        while self._refs:
            ready, _ = self._ray.wait(list(self._refs), num_returns=1)
            ref = ready[0]
            task = self._refs.pop(ref)
            try:
                out = self._ray.get(ref)
            except (WorkerCrashedError, OutOfMemoryError, NodeDiedError, ObjectLostError) as exc:
                task.attempts = 1 + task.max_retries
                detail = " ".join(str(exc).split())[:300]
                self.stats["lost"] += 1
                log.error("task %s lost: its worker died on all %d attempts (%s)", task.key,
                          task.attempts, detail)
                yield TaskDone(task.task_id, task.key, WorkerLostError(task.key, task.attempts, detail),
                               lost=True, attempts=task.attempts)
                continue
            yield self._finish(task, out)

    def cancel(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()

    def close(self) -> None:
        self.cancel()
        self._fn_refs.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            log.info("ray: %s", "local instance stopped" if self._owns == "instance" else "disconnected")
        self._owns = None
