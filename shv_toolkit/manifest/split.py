"""Pipeline step 8: deterministic 4:1 train/test split at SOURCE level.

Splitting sources rather than clips keeps every video (and so every identity in it) on one side:
clips of the same person in train and test would inflate test scores.

Rule (also in manifests/SCHEMA.md):

* every source gets ``u = int(sha256("shv-split-v1|<seed>|<source_id>").hexdigest()[:16], 16) / 2**64``,
  a uniform number in ``[0, 1)`` that depends only on the seed and the source id;
* ``mode = "rank"`` (default): sort the distinct source ids by ``(u, source_id)``; the first
  ``n_test = floor(test_fraction * n + 0.5)`` are test, the rest train. The ratio is as close to
  ``test_fraction`` as whole sources allow (5 sources -> exactly 1 test, 10 -> 2, 2 -> 0);
* ``mode = "threshold"``: test iff ``u < test_fraction``; a source never changes split when other
  sources are added, at the price of noisy ratios on small sets.

Both are independent of the order in which sources are listed or processed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from shv_toolkit.config import SplitConfig
from shv_toolkit.core.errors import UsageError


def split_hash(source_id: str, seed: int) -> float:
    """The source's uniform number ``u`` in ``[0, 1)`` (see the module docstring)."""
    digest = hashlib.sha256(f"shv-split-v1|{int(seed)}|{source_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 2.0**64


def n_test_sources(n: int, test_fraction: float) -> int:
    """``floor(test_fraction * n + 0.5)``: round half up, so the count never depends on float ties."""
    return int(math.floor(test_fraction * n + 0.5 + 1e-9))


def assign_splits(source_ids: Iterable[str], cfg: SplitConfig | None = None) -> dict[str, str]:
    """Map each distinct source id to ``"train"`` or ``"test"``."""
    cfg = cfg or SplitConfig()
    if not 0.0 <= cfg.test_fraction <= 1.0:
        raise UsageError(f"split.test_fraction must be within [0, 1], got {cfg.test_fraction}")
    ids = sorted(set(source_ids))
    u = {s: split_hash(s, cfg.seed) for s in ids}
    if cfg.mode == "threshold":
        return {s: ("test" if u[s] < cfg.test_fraction else "train") for s in ids}
    if cfg.mode != "rank":
        raise UsageError(f"split.mode must be 'rank' or 'threshold', got {cfg.mode!r}")
    ranked = sorted(ids, key=lambda s: (u[s], s))
    test = set(ranked[: n_test_sources(len(ids), cfg.test_fraction)])
    return {s: ("test" if s in test else "train") for s in ids}
