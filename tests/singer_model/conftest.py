"""The tiny SINGER models are dominated by per-op overhead: one intra-op thread is several times
faster on 2 cores than the default pool (which also fights the other test workers for the CPU)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

PERF = Path(__file__).resolve().parents[2] / "perf"


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def perf_script(name: str) -> Iterator[ModuleType]:
    """``perf/<name>.py`` imported as module ``name`` for a fixture to yield; removed from sys.modules after."""
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)
