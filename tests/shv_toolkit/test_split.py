"""Source-level train/test split: deterministic, order independent, disjoint, 4:1."""

from __future__ import annotations

import hashlib
import random

import pytest

from shv_toolkit.config import SplitConfig
from shv_toolkit.core.errors import UsageError
from shv_toolkit.manifest.split import assign_splits, n_test_sources, split_hash


def ids(n: int) -> list[str]:
    return [f"yt-{hashlib.md5(str(i).encode()).hexdigest()[:11]}" for i in range(n)]


def test_hash_matches_the_documented_formula():
    h = hashlib.sha256(b"shv-split-v1|7|abc").hexdigest()
    assert split_hash("abc", 7) == int(h[:16], 16) / 2**64
    assert 0.0 <= split_hash("abc", 7) < 1.0
    assert split_hash("abc", 7) != split_hash("abc", 8)


def test_deterministic_and_independent_of_order():
    s = ids(40)
    a = assign_splits(s, SplitConfig(seed=3))
    shuffled = s[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, SplitConfig(seed=3)) == a
    assert assign_splits(shuffled + s[:5], SplitConfig(seed=3)) == a  # duplicates collapse
    assert set(a) == set(s) and set(a.values()) == {"train", "test"}
    assert assign_splits(s, SplitConfig(seed=4)) != a  # the seed matters


@pytest.mark.parametrize(("n", "n_test"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (7, 1), (8, 2), (10, 2),
                                           (12, 2), (13, 3), (100, 20), (701, 140)])
def test_rank_mode_gives_the_4_to_1_ratio(n, n_test):
    assert n_test_sources(n, 0.2) == n_test
    for seed in range(3):
        splits = assign_splits(ids(n), SplitConfig(seed=seed))
        assert sum(v == "test" for v in splits.values()) == n_test


def test_rank_mode_picks_the_smallest_hashes():
    s = ids(20)
    splits = assign_splits(s, SplitConfig(seed=0))
    ranked = sorted(s, key=lambda x: split_hash(x, 0))
    assert {x for x in s if splits[x] == "test"} == set(ranked[:4])


def test_threshold_mode_is_stable_when_sources_are_added():
    cfg = SplitConfig(seed=0, mode="threshold")
    small = assign_splits(ids(30), cfg)
    big = assign_splits(ids(2000), cfg)
    assert all(big[k] == v for k, v in small.items())
    share = sum(v == "test" for v in big.values()) / len(big)
    assert 0.17 < share < 0.23
    assert all((v == "test") == (split_hash(k, 0) < 0.2) for k, v in big.items())


def test_every_source_in_exactly_one_split_and_bad_config():
    splits = assign_splits(ids(50))
    train = {k for k, v in splits.items() if v == "train"}
    test = {k for k, v in splits.items() if v == "test"}
    assert not train & test and train | test == set(ids(50))
    assert assign_splits([]) == {}
    with pytest.raises(UsageError):
        assign_splits(ids(3), SplitConfig(test_fraction=1.5))
    with pytest.raises(UsageError):
        assign_splits(ids(3), SplitConfig(mode="random"))
