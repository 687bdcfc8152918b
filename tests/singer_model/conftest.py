"""The tiny SINGER models are dominated by per-op overhead: one intra-op thread is several times
faster on 2 cores than the default pool (which also fights the other test workers for the CPU)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
