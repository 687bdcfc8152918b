"""Engines (issue 7): local in-process, local worker processes and Ray give the same results.

One private Ray instance (2 CPUs, 127.0.0.1 only) is started for the whole module by the engine
itself and stopped at the end. Builds use two real sources of the bundled sample with 2 clips per
render task, so every source has several clip groups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest

from shv_toolkit.build import BuildLayout, run_build
from shv_toolkit.cli import main as cli_main
from shv_toolkit.core.engines import WorkerLostError, make_engine
from shv_toolkit.core.engines.base import FAULT_ENV, FAULT_MATCH_ENV, FAULT_TIMES_ENV
from shv_toolkit.core.errors import UsageError
from shv_toolkit.core.jsoncodec import decode

from ...conftest import REPO

MANIFESTS = ("sources", "clips", "train", "test")
SAMPLE = REPO / "manifests" / "sample" / "input"
GROUP = 2  # clips per render task: franck_lena (4 candidates) and cap12_falcon_mix (3) get 2 groups each


# ----------------------------------------------------------------------------- picklable task functions

def square(x: int) -> int:
    logging.getLogger("shv_toolkit.test_engines").info("square of %d", x)
    return x * x


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two is not allowed")
    return x


class KillOnce:
    """Kills its own worker process the first time it sees ``victim`` (a marker file records it)."""

    def __init__(self, marker_dir: str, victim: int, always: bool = False) -> None:
        self.marker_dir, self.victim, self.always = marker_dir, victim, always

    def __call__(self, x: int) -> tuple[int, int]:
        if x == self.victim:
            marker = Path(self.marker_dir) / f"killed-{x}-{len(list(Path(self.marker_dir).iterdir()))}"
            if self.always or not any(Path(self.marker_dir).iterdir()):
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return x, os.getpid()


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def ray_engine():
    eng = make_engine("ray", workers=2)
    yield eng
    eng.close()
    import ray

    assert not ray.is_initialized()  # the engine stopped the instance it started


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> Path:
    lst = tmp_path_factory.mktemp("lists") / "two.txt"
    lst.write_text(f"{SAMPLE / 'franck_lena.mp4'}\n{SAMPLE / 'cap12_falcon_mix.mp4'}\n")
    return lst


@pytest.fixture(scope="module")
def reference(two_sources, tmp_path_factory):
    """In-process build (local engine, 1 worker): the reference every engine must reproduce."""
    out = tmp_path_factory.mktemp("ref")
    summary = run_build(two_sources, out, progress=False, group_clips=GROUP)
    return out, summary


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(out / f"{n}.parquet") for n in MANIFESTS}


def _digests(out: Path) -> dict[str, str]:
    clips = pd.read_parquet(out / "clips.parquet")
    return {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest()
            for col in ("video_path", "audio_path", "vocals_path") for rel in clips[col].dropna()}


def _assert_same_build(ref: Path, out: Path) -> None:
    a, b = _tables(ref), _tables(out)
    # local_path is relative to the output directory: the same file seen from another directory
    assert [(ref / p).resolve() for p in a["sources"]["local_path"]] == \
        [(out / p).resolve() for p in b["sources"]["local_path"]]
    for name in MANIFESTS:
        pd.testing.assert_frame_equal(a[name].drop(columns="local_path", errors="ignore"),
                                      b[name].drop(columns="local_path", errors="ignore"), check_exact=True)
    da, db = _digests(ref), _digests(out)
    assert da == db and len(da) > 0
    # nothing duplicated or left over: the clip directories hold exactly the manifest's files
    on_disk = sorted(str(p.relative_to(out)) for p in (out / "clips").rglob("*") if p.is_file())
    assert on_disk == sorted(db)
    assert not list(out.rglob(".*partial*"))
    assert not list((out / "work").rglob("audio-*.npy"))  # caches removed once a source is done


# ----------------------------------------------------------------------------- generic engine interface

@pytest.fixture(params=["local-1", "local-2", "ray"])
def engine(request, ray_engine):
    if request.param == "ray":
        yield ray_engine
        return
    eng = make_engine("local", workers=int(request.param[-1]))
    yield eng
    eng.close()


def test_map_results_and_forwarded_logs(engine, caplog):
    caplog.set_level(logging.INFO, logger="shv_toolkit")
    got = list(engine.map(square, range(6)))
    assert sorted(got) == [(i, i * i) for i in range(6)]
    msgs = [r for r in caplog.records if r.name == "shv_toolkit.test_engines"]
    assert sorted(r.getMessage() for r in msgs) == sorted(f"square of {i}" for i in range(6))
    if not engine.in_process:  # the records were emitted in worker processes and replayed here
        assert all(r.process != os.getpid() for r in msgs)


def test_task_exception_propagates(engine):
    with pytest.raises(ValueError, match="two is not allowed"):
        list(engine.map(fail_on_two, range(4)))
    assert list(engine.map(square, [3])) == [(0, 9)]  # the engine is still usable


@pytest.mark.parametrize("name", ["local", "ray"])
def test_killed_worker_is_retried(name, ray_engine, tmp_path):
    eng = ray_engine if name == "ray" else make_engine("local", workers=2)
    try:
        got = dict(eng.map(KillOnce(str(tmp_path), victim=3), range(6)))
    finally:
        if eng is not ray_engine:
            eng.close()
    assert sorted(got) == list(range(6)) and all(v[0] == k for k, v in got.items())
    killed = list(tmp_path.iterdir())
    assert len(killed) == 1  # killed once, then the retry ran in another process
    assert int(killed[0].read_text()) != got[3][1]


@pytest.mark.parametrize("name", ["local", "ray"])
def test_worker_dying_every_time_is_reported_lost(name, ray_engine, tmp_path):
    eng = ray_engine if name == "ray" else make_engine("local", workers=2)
    try:
        got = dict(eng.map(KillOnce(str(tmp_path), victim=1, always=True), range(3), on_lost="return",
                           max_retries=1))
        assert isinstance(got[1], WorkerLostError) and got[1].attempts == 2
        assert got[0][0] == 0 and got[2][0] == 2  # the other tasks are unaffected
        assert len(list(tmp_path.iterdir())) == 2
        with pytest.raises(WorkerLostError):
            list(eng.map(KillOnce(str(tmp_path), victim=0, always=True), [0], max_retries=0))
        assert len(list(tmp_path.iterdir())) == 3
    finally:
        if eng is not ray_engine:
            eng.close()


def test_private_ray_instance_is_loopback_only(ray_engine):
    import ray

    assert ray_engine.node_addresses() == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert ray.cluster_resources()["CPU"] == 2 and ray_engine.capacity == 2


def test_engine_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        make_engine("spark")
    with pytest.raises(UsageError):
        make_engine("local", ray_address="auto")
    with pytest.raises(UsageError):
        make_engine("local", workers=0)
    lst = tmp_path / "l.txt"
    lst.write_text("")
    assert cli_main(["--urls", str(lst), "--out", str(tmp_path / "o"), "--ray-address", "auto"]) == 2


# ----------------------------------------------------------------------------- builds on real media

def test_reference_build_has_several_groups(reference):
    out, summary = reference
    assert summary.exit_code() == 0 and summary.n_ok == 2 and summary.clips_kept >= 4
    assert summary.tasks == {"analyse": 2, "render": 4}
    layout = BuildLayout(out)
    for sid in pd.read_parquet(out / "sources.parquet")["source_id"]:
        assert len(list((layout.work / sid / "groups").glob("*.json"))) == 2


def test_local_workers_and_ray_build_identical_manifests(reference, two_sources, ray_engine, tmp_path):
    ref, _ = reference
    out_local = tmp_path / "local2"
    rc = cli_main(["--urls", str(two_sources), "--out", str(out_local), "--engine", "local", "--workers", "2",
                   "--group-clips", str(GROUP), "--no-progress"])
    assert rc == 0
    _assert_same_build(ref, out_local)

    out_ray = tmp_path / "ray"
    summary = run_build(two_sources, out_ray, progress=False, group_clips=GROUP, engine=ray_engine)
    assert summary.tasks == {"analyse": 2, "render": 4}
    _assert_same_build(ref, out_ray)
    # the CLI on Ray (this process's Ray connection is reused, not stopped): a finished build is a no-op
    before = _digests(out_ray)
    rc = cli_main(["--urls", str(two_sources), "--out", str(out_ray), "--engine", "ray", "--no-progress"])
    assert rc == 0 and _digests(out_ray) == before
    _assert_same_build(ref, out_ray)


def test_helper_threads_never_make_tasks_unschedulable(reference, two_sources, ray_engine, tmp_path, monkeypatch):
    """Helper threads are not CPUs a task asks Ray for: with more threads per task than the instance
    has CPUs the build still runs, identical to the reference. On Ray, auto is one helper thread."""
    from shv_toolkit.build.driver import Driver
    from shv_toolkit.build.units import TaskThreads
    from shv_toolkit.config import BuildConfig

    driver = Driver(BuildLayout(tmp_path / "d"), BuildConfig(), ray_engine, GROUP, progress=False)
    assert driver.threads == TaskThreads(helpers=1, decoder=1) and driver.render_fn.threads.helpers == 1
    assert driver.render_fn.resources.cpus == 1 and driver.analyse_fn.resources.cpus == 1
    cfg = BuildConfig()
    cfg.clips.threads = 3  # the private instance has 2 CPUs
    asked = []
    real_submit = ray_engine.submit

    def submit(fn, item, **kw):
        asked.append(kw.get("num_cpus", 1))
        return real_submit(fn, item, **kw)

    monkeypatch.setattr(ray_engine, "submit", submit)
    out = tmp_path / "threads3"
    build = threading.Thread(target=run_build, args=(two_sources, out, cfg),
                             kwargs={"progress": False, "group_clips": GROUP, "engine": ray_engine}, daemon=True)
    build.start()
    build.join(timeout=300)
    if build.is_alive():
        ray_engine.cancel()
        pytest.fail("the build never finished: a task asked for more CPUs than the instance has")
    assert asked and set(asked) == {1}
    _assert_same_build(reference[0], out)


def test_gpu_separation_needs_a_gpu_on_the_cluster(two_sources, ray_engine, tmp_path):
    from shv_toolkit.config import BuildConfig

    cfg = BuildConfig()
    cfg.vocals.device = "cuda"
    with pytest.raises(UsageError, match="no GPU"):
        run_build(two_sources, tmp_path / "gpu", cfg, progress=False, engine=ray_engine)
    assert ray_engine.pending() == 0


def test_resume_on_ray_runs_only_missing_work(reference, two_sources, ray_engine, tmp_path):
    """A local run 'killed' with source A half rendered and source B not analysed is finished on Ray."""
    ref, _ = reference
    out = tmp_path / "resume"
    shutil.copytree(ref, out)
    layout = BuildLayout(out)
    clips = pd.read_parquet(out / "clips.parquet")
    sid_a, sid_b = pd.read_parquet(out / "sources.parquet")["source_id"]
    for name in MANIFESTS:
        (out / f"{name}.parquet").unlink()
    # A: analysis and group 0 done, group 1 not (its marker and clip files gone)
    layout.result_file(sid_a).unlink()
    group1 = decode(json.loads(layout.group_file(sid_a, 1).read_text())["group"]).clips
    layout.group_file(sid_a, 1).unlink()
    for c in group1:
        for col in ("video_path", "audio_path", "vocals_path"):
            if c[col]:
                (out / c[col]).unlink()
    # B: nothing done
    shutil.rmtree(layout.work / sid_b)
    shutil.rmtree(layout.clips / sid_b)
    assert len(clips[clips.source_id == sid_a]) > len(group1)

    summary = run_build(two_sources, out, progress=False, group_clips=GROUP, engine=ray_engine)
    assert summary.tasks == {"analyse": 1, "render": 1 + 2}  # A's group 1, B's analysis + 2 groups
    _assert_same_build(ref, out)


def test_workers_killed_during_build_are_retried(reference, two_sources, ray_engine, tmp_path, monkeypatch):
    """Ray workers SIGKILLed mid-build (one source's analysis, a clip group of the other) on their
    first attempt: the retries complete the build, identical to the reference, nothing duplicated."""
    ref, _ = reference
    sid_a, sid_b = pd.read_parquet(ref / "sources.parquet")["source_id"]
    faults = tmp_path / "faults"
    monkeypatch.setenv(FAULT_ENV, str(faults))
    monkeypatch.setenv(FAULT_MATCH_ENV, f"analyse:{sid_a},render:{sid_b}:1")
    out = tmp_path / "killed"
    summary = run_build(two_sources, out, progress=False, group_clips=GROUP, engine=ray_engine)
    killed = sorted(p.read_text().split()[0] for p in faults.iterdir())
    assert killed == [f"analyse:{sid_a}", f"render:{sid_b}:1"]  # each killed once
    assert summary.exit_code() == 0 and summary.tasks == {"analyse": 2, "render": 4}
    _assert_same_build(ref, out)
    clip_ids = pd.read_parquet(out / "clips.parquet")["clip_id"]
    assert clip_ids.is_unique


def test_source_whose_worker_always_dies_is_recorded_failed(reference, two_sources, ray_engine, tmp_path,
                                                            monkeypatch):
    ref, _ = reference
    sid_b = pd.read_parquet(ref / "sources.parquet")["source_id"].iloc[1]
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "faults"))
    monkeypatch.setenv(FAULT_MATCH_ENV, f"render:{sid_b}:0")
    monkeypatch.setenv(FAULT_TIMES_ENV, "99")
    out = tmp_path / "failing"
    summary = run_build(two_sources, out, progress=False, group_clips=GROUP, engine=ray_engine)
    assert summary.exit_code() == 1 and summary.n_ok == 1
    assert summary.tasks == {"analyse": 2, "render": 4, "lost": 1}
    sources = pd.read_parquet(out / "sources.parquet").set_index("source_id")
    assert sources.loc[sid_b, "status"] == "failed"
    assert sources.loc[sid_b, "error"].startswith("clip group 1 of 2: worker process died 3 time(s)")
    assert len(list((tmp_path / "faults").iterdir())) == 1 + ray_engine.max_retries
    assert not pd.read_parquet(out / "clips.parquet")["source_id"].eq(sid_b).any()
    # once the fault is gone, --retry-failed completes the build exactly like the reference
    monkeypatch.delenv(FAULT_ENV)
    summary = run_build(two_sources, out, progress=False, group_clips=GROUP, retry_failed=True)
    assert summary.tasks == {"render": 1}  # only the lost group: the plan and group 2 were kept
    _assert_same_build(ref, out)
