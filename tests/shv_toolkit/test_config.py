"""config.py: the thread settings change no output, so they stay out of the config hash; their auto rules."""

from __future__ import annotations

import os

import pytest

from shv_toolkit.config import BuildConfig
from shv_toolkit.core.errors import UsageError


def test_threads_are_not_hashed_but_validated():
    base = BuildConfig()
    for threads in (0, 1, 7):
        cfg = BuildConfig.from_dict({"clips": {"threads": threads}})
        assert cfg.config_hash() == base.config_hash()
        assert cfg.helper_threads(workers=3) == threads
    assert BuildConfig.from_dict({"clips": {"crf": 20}}).config_hash() != base.config_hash()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(UsageError, match="clips.threads"):
            BuildConfig.from_dict({"clips": {"threads": bad}})


def test_auto_threads_share_the_cores_among_workers():
    cores = len(os.sched_getaffinity(0))
    cfg = BuildConfig()
    assert cfg.clips.threads is None
    assert cfg.helper_threads() == max(1, min(8, cores))
    assert cfg.helper_threads(workers=cores) == 1
    assert cfg.helper_threads(workers=10 * cores) == 1
    assert cfg.helper_threads(local=False) == 1  # Ray: one task per CPU it schedules
    cfg.clips.threads = 3
    assert cfg.helper_threads(local=False) == 3


@pytest.mark.parametrize(("cores", "workers", "threads", "local", "want"), [
    (2, 1, None, True, 1),  # 2 helpers + the task's thread already fill 2 cores: no frame threads
    (16, 1, None, True, 0),  # 8 helpers + 1 leave idle cores: FFmpeg's choice
    (16, 4, None, True, 1),  # 4 helpers + 1 > 16 / 4
    (16, 1, 0, True, 1),  # --threads 0: everything in one thread, the decoder too
    (16, 1, 3, True, 0),
    (16, 1, None, False, 1),  # Ray: one CPU per task
])
def test_decoder_threads_only_where_cores_are_idle(monkeypatch, cores, workers, threads, local, want):
    import shv_toolkit.config as config_mod

    monkeypatch.setattr(config_mod, "_usable_cores", lambda: cores)
    cfg = BuildConfig.from_dict({"clips": {"threads": threads}})
    assert cfg.decoder_threads(workers, local=local) == want
    cfg.clips.decoder_threads = 4  # explicit setting wins
    assert cfg.decoder_threads(workers, local=local) == 4


def test_decoder_threads_are_not_hashed_but_validated():
    assert BuildConfig.from_dict({"clips": {"decoder_threads": 2}}).config_hash() == BuildConfig().config_hash()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(UsageError, match="clips.decoder_threads"):
            BuildConfig.from_dict({"clips": {"decoder_threads": bad}})


@pytest.mark.parametrize("name", ["sample_stride", "pose_stride"])
def test_score_strides_are_hashed_and_validated(name):
    assert BuildConfig.from_dict({"filters": {name: 3}}).config_hash() != BuildConfig().config_hash()
    for bad in (0, -2, 2.5, "5", True):
        with pytest.raises(UsageError, match=f"filters.{name}"):
            BuildConfig.from_dict({"filters": {name: bad}})
