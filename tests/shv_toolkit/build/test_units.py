"""Work units: thread policy from the engine's cores per task, declared resources, even clip groups."""

from __future__ import annotations

import pytest

from shv_toolkit.build.units import AnalyseTask, RenderTask, TaskThreads, plan_groups
from shv_toolkit.config import BuildConfig, ClipConfig
from shv_toolkit.core.engines import make_engine
from shv_toolkit.core.engines.base import usable_cores
from shv_toolkit.core.errors import UsageError


@pytest.mark.parametrize(("cores", "threads", "decoder", "want"), [
    (2, None, None, TaskThreads(2, 1)),  # 2 helpers + the task's thread already fill 2 cores: no frame threads
    (16, None, None, TaskThreads(8, 0)),  # 8 helpers + 1 leave idle cores: FFmpeg's choice
    (4, None, None, TaskThreads(4, 1)),  # 16 cores / 4 workers: 4 helpers + 1 > 4
    (16, 0, None, TaskThreads(0, 1)),  # --threads 0: everything in one thread, the decoder too
    (16, 3, None, TaskThreads(3, 0)),
    (1, None, None, TaskThreads(1, 1)),  # Ray: one core per task
    (16, None, 4, TaskThreads(8, 4)),  # an explicit decoder setting wins
])
def test_task_threads_follow_the_cores_per_task(cores, threads, decoder, want):
    assert TaskThreads.resolve(ClipConfig(threads=threads, decoder_threads=decoder), cores) == want


def test_local_engine_shares_the_cores_among_workers():
    cores = usable_cores()
    with make_engine("local") as one:
        assert one.cores_per_task == cores
    with make_engine("local", workers=10 * cores) as many:
        assert many.cores_per_task == 1


def test_engine_settings_are_validated_in_one_place():
    with pytest.raises(UsageError, match="workers"):
        make_engine("local", workers=0)
    with pytest.raises(UsageError, match="ray-address"):
        make_engine("local", ray_address="127.0.0.1:1")


def test_tasks_declare_their_resources():
    cfg = BuildConfig()
    threads = TaskThreads(2, 1)
    assert AnalyseTask(cfg, "/o", threads).resources.gpus == 0
    assert RenderTask(cfg, "/o", threads).resources.gpus == 0
    cfg.vocals.device = "cuda:0"
    assert RenderTask(cfg, "/o", threads).resources.gpus == 1
    cfg.vocals.backend = "none"
    assert RenderTask(cfg, "/o", threads).resources.gpus == 0


def test_groups_are_even_and_keep_order():
    groups = plan_groups(list(range(50)), 24)
    assert [len(g) for g in groups] == [17, 16, 17] and sum(groups, []) == list(range(50))
    assert plan_groups([], 24) == []
    with pytest.raises(ValueError):
        plan_groups([1], 0)
