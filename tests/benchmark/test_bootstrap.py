"""Bootstrap intervals over clips: resamples, per-clip means and FVD recomputed from resampled window
statistics, each against a computation on explicitly resampled data."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core import encode_state, fresh_shard
from benchmark.metrics.base import (
    Clip,
    PerClipMeanMetric,
    bootstrap_counts,
    bootstrap_means,
    percentile_interval,
)
from benchmark.metrics.fvd import FEATURE_DIM, FVD, bootstrap_fvd, frechet_distance
from benchmark.runner import row_intervals


def test_counts_are_seeded_resamples_with_replacement() -> None:
    a, b = bootstrap_counts(7, 50, seed=3), bootstrap_counts(7, 50, seed=3)
    assert a.shape == (50, 7) and (a == b).all() and (a.sum(axis=1) == 7).all()
    assert not (bootstrap_counts(7, 50, seed=4) == a).all()
    # the same draws as numpy's generator, counted by hand
    draws = np.random.default_rng(3).integers(0, 7, size=(50, 7))
    assert (a == np.array([[list(row).count(i) for i in range(7)] for row in draws])).all()
    with pytest.raises(ValueError):
        bootstrap_counts(0, 10)


def test_means_and_percentiles_against_explicit_resamples() -> None:
    values = np.array([1.0, 4.0, np.nan, 10.0, 2.5])  # clip 2 was not scored
    counts = bootstrap_counts(5, 400, seed=0)
    draws = np.random.default_rng(0).integers(0, 5, size=(400, 5))
    explicit = []
    for row in draws:
        drawn = [values[i] for i in row if np.isfinite(values[i])]
        explicit.append(np.mean(drawn) if drawn else np.nan)
    np.testing.assert_allclose(bootstrap_means(values, counts), explicit, rtol=1e-12)
    lo, hi = percentile_interval(np.array(explicit))
    finite = np.array(explicit)[np.isfinite(explicit)]
    assert (lo, hi) == pytest.approx((np.percentile(finite, 2.5), np.percentile(finite, 97.5)))
    assert lo <= np.nanmean(values) <= hi
    assert percentile_interval(np.array([np.nan, 1.0])) is None


class _First(PerClipMeanMetric):
    name = "first"
    higher_is_better = True

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return float(generated.frames[0, 0, 0, 0])


def _clip(v: int, cid: str) -> Clip:
    return Clip(np.full((1, 8, 8, 3), v, np.uint8), 25.0, clip_id=cid)


def test_metric_intervals_follow_clip_ids_and_skip_absent_clips() -> None:
    m = _First()
    for v, cid in ((10, "a"), (30, "c"), (50, "d")):
        m.update(_clip(v, cid), _clip(v, cid))
    ids = ["a", "b", "c", "d"]  # "b" failed before the metric: absent from every resample
    counts = bootstrap_counts(4, 300, seed=1)
    ci = m.intervals(ids, counts)["first"]
    reps = bootstrap_means(np.array([10.0, np.nan, 30.0, 50.0]), counts)
    assert ci == percentile_interval(reps) and ci[0] < 30.0 < ci[1]


def _fvd_shards(rng: np.random.Generator, n_clips: int, windows: int, shift: float) -> tuple[list, list]:
    shards, feats = [], []
    for _ in range(n_clips):
        gt = rng.normal(size=(windows, FEATURE_DIM))
        gen = gt * 0.8 + rng.normal(size=gt.shape) * 0.5 + shift
        shard = FVD(progress=False)
        shard.update_features(gen, gt)
        shards.append(shard)
        feats.append((gen, gt))
    return shards, feats


def _fvd_of(gen: np.ndarray, gt: np.ndarray) -> float:
    """FVD of explicit feature sets: numpy's mean and covariance of the stacked windows."""
    return frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), gt.mean(0), np.cov(gt, rowvar=False))


def test_fvd_bootstrap_equals_fvd_of_explicitly_resampled_windows() -> None:
    rng = np.random.default_rng(0)
    shards, feats = _fvd_shards(rng, 4, 6, 0.3)
    shards.insert(2, None)  # a clip without FVD state (failed)
    feats.insert(2, None)
    counts = bootstrap_counts(5, 12, seed=2)
    reps, ci = bootstrap_fvd(shards, counts)
    for b, row in enumerate(counts):
        drawn = [feats[i] for i in range(5) for _ in range(row[i]) if feats[i] is not None]
        if sum(len(f[0]) for f in drawn) < 2:
            assert np.isnan(reps[b])
            continue
        gen = np.concatenate([f[0] for f in drawn])
        gt = np.concatenate([f[1] for f in drawn])
        assert reps[b] == pytest.approx(_fvd_of(gen, gt), rel=1e-8)
    assert ci == percentile_interval(reps)
    # all clips drawn once: the merged metric's own value
    merged = FVD(progress=False)
    for s in shards:
        if s is not None:
            merged.merge(s)
    once, _ = bootstrap_fvd(shards, np.ones((1, 5), dtype=np.int64))
    assert once[0] == pytest.approx(merged.compute().value, rel=1e-10)


def test_row_intervals_from_cached_clip_records() -> None:
    """The runner's path: FVD from each clip's cached one-clip state, per-clip metrics from the merged one."""
    rng = np.random.default_rng(5)
    shards, _ = _fvd_shards(rng, 3, 5, 0.2)
    template = FVD(progress=False)
    first = _First()
    records = []
    merged_fvd, merged_first = fresh_shard(template), _First()
    for i, (cid, shard) in enumerate(zip(["x", "y", "z"], shards, strict=True)):
        one = _First()
        one.update(_clip(10 * (i + 1), cid), _clip(10 * (i + 1), cid))
        merged_first.merge(one)
        merged_fvd.merge(shard)
        records.append({"clip_id": cid, "metrics": {"fvd": {"state": encode_state(shard)}}})
    ids = ["x", "y", "z"]
    out = row_intervals(records, {"fvd": template, "first": first}, {"fvd": merged_fvd, "first": merged_first},
                        ids, samples=40, seed=9)
    counts = bootstrap_counts(3, 40, seed=9)
    assert out["fvd"] == bootstrap_fvd(shards, counts)[1]
    assert out["first"] == percentile_interval(bootstrap_means(np.array([10.0, 20.0, 30.0]), counts))
    again = row_intervals(records, {"fvd": template, "first": first}, {"fvd": merged_fvd, "first": merged_first},
                          ids, samples=40, seed=9)
    assert again == out  # seeded: reproducible


def test_evaluate_fvd_interval_from_kept_clip_states(monkeypatch) -> None:
    """shv-metrics' path: with bootstrap on, FVD is the same number, and its interval is the FVD of
    explicitly resampled windows (a fixed random projection stands in for I3D so this runs in a second)."""
    from benchmark.evaluate import evaluate
    from benchmark.metrics.fvd import clip_features

    proj = np.random.default_rng(1).normal(size=(16 * 4 * 4 * 3, FEATURE_DIM))

    def fake_extract(batch: np.ndarray) -> np.ndarray:  # (B, 16, H, W, 3) uint8 -> (B, 400)
        small = batch[:, :, ::8, ::8].reshape(len(batch), -1).astype(np.float64) / 255.0
        return small @ proj

    monkeypatch.setattr(FVD, "_extractor", lambda self: fake_extract)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        gt = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        gen = np.clip(gt.astype(int) + rng.integers(-30 - 10 * i, 31, gt.shape), 0, 255).astype(np.uint8)
        pairs.append((Clip(gen, 25.0, clip_id=f"c{i}"), Clip(gt, 25.0, clip_id=f"c{i}")))
    plain = evaluate(pairs, ["fvd"], progress=False)
    res = evaluate(pairs, ["fvd"], progress=False, bootstrap=30, bootstrap_seed=4)
    assert res.value("fvd") == plain.value("fvd") and plain.intervals == {}
    feats = [(clip_features(fake_extract, g.frames, 16, 1), clip_features(fake_extract, r.frames, 16, 1))
             for g, r in pairs]
    counts = bootstrap_counts(4, 30, seed=4)
    reps = []
    for row in counts:
        drawn = [feats[i] for i in range(4) for _ in range(row[i])]
        reps.append(_fvd_of(np.concatenate([f[0] for f in drawn]), np.concatenate([f[1] for f in drawn])))
    lo, hi = res.intervals["fvd"]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), rel=1e-8)
