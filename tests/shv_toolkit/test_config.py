"""config.py: the thread setting changes no output, so it stays out of the config hash."""

from __future__ import annotations

import os

import pytest

from shv_toolkit.config import BuildConfig
from shv_toolkit.errors import UsageError


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
