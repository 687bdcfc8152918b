"""SSIM and PSNR against scikit-image itself, on real face-video frames and degraded copies."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.metrics.base import AlignmentError, Clip, MetricInputError
from benchmark.metrics.psnr import PSNR, psnr_clip, psnr_frames
from benchmark.metrics.ssim import SSIM, ssim_clip, ssim_frames
from shv_toolkit.core import media


@pytest.fixture(scope="module")
def frames(shared_media) -> np.ndarray:
    """8 real frames (288x360) of a man talking, plus 8 of a second face video resized to match."""
    a = media.read_video(shared_media / "franck.mp4", fps=25, start=1.0, end=1.32)
    b = media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", fps=25, start=2.0, end=2.32)
    b = np.stack([cv2.resize(f, (a.shape[2], a.shape[1]), interpolation=cv2.INTER_AREA) for f in b])
    return np.concatenate([a[:8], b[:8]])


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in x])


def shift(x: np.ndarray, px: int) -> np.ndarray:
    return np.roll(x, px, axis=2)


def noise(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)


DEGRADATIONS = {
    "blur": (blur, [0.8, 1.6, 3.2]),
    "shift": (shift, [1, 3, 8]),
    "noise": (noise, [4.0, 12.0, 30.0]),
}


def sk_ssim(gen: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.array(
        [structural_similarity(r, g, channel_axis=-1, data_range=255) for g, r in zip(gen, gt, strict=True)]
    )


def sk_psnr(gen: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.array([peak_signal_noise_ratio(r, g, data_range=255) for g, r in zip(gen, gt, strict=True)])


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_matches_scikit_image_on_degraded_real_frames(frames, kind):
    fn, levels = DEGRADATIONS[kind]
    for level in levels:
        gen = fn(frames, level)
        ours_s, ref_s = ssim_frames(gen, frames), sk_ssim(gen, frames)
        ours_p, ref_p = psnr_frames(gen, frames), sk_psnr(gen, frames)
        assert np.abs(ours_s - ref_s).max() < 1e-4, (kind, level)
        assert np.abs(ours_p - ref_p).max() < 1e-3, (kind, level)
        assert ssim_clip(gen, frames) == pytest.approx(ref_s.mean(), abs=1e-4)
        assert psnr_clip(gen, frames) == pytest.approx(ref_p.mean(), abs=1e-3)


def test_argument_order_is_ground_truth_first_for_the_reference(frames):
    # SSIM is symmetric up to float rounding; checking both orders guards against a swapped formula
    gen = blur(frames[:3], 2.0)
    assert np.allclose(ssim_frames(gen, frames[:3]), ssim_frames(frames[:3], gen), atol=1e-12)


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_stronger_degradation_scores_lower(frames, kind):
    fn, levels = DEGRADATIONS[kind]
    ssims = [ssim_clip(fn(frames, lv), frames) for lv in levels]
    psnrs = [psnr_clip(fn(frames, lv), frames) for lv in levels]
    assert ssims[0] > ssims[1] > ssims[2], ssims
    assert psnrs[0] > psnrs[1] > psnrs[2], psnrs
    assert ssim_clip(frames, frames) > ssims[0]


def test_identical_frames_ssim_one_psnr_capped(frames):
    assert np.allclose(ssim_frames(frames, frames), 1.0, atol=1e-12)
    assert np.all(psnr_frames(frames, frames) == 100.0)
    assert psnr_clip(frames, frames) == 100.0
    assert math.isinf(psnr_clip(frames, frames, cap_db=None))
    assert psnr_clip(frames, frames, cap_db=60.0) == 60.0
    # one identical frame among degraded ones: capped at 100 before averaging, not inf
    gen = noise(frames[:4], 10.0)
    gen[0] = frames[0]
    per = psnr_frames(gen, frames[:4])
    assert per[0] == 100.0 and np.all(per[1:] < 40)
    assert psnr_clip(gen, frames[:4]) == pytest.approx(per.mean())


def test_metric_classes_aggregate_and_merge(frames):
    gt = [Clip(frames[i : i + 4], clip_id=f"c{i}") for i in range(0, 16, 4)]
    gens = [Clip(blur(c.frames, 1.0 + k), clip_id=c.clip_id) for k, c in enumerate(gt)]
    gens[3] = Clip(gt[3].frames.copy(), clip_id="c12")  # a perfect clip

    whole_s, whole_p = SSIM(), PSNR()
    for g, r in zip(gens, gt, strict=True):
        whole_s.update(g, r)
        whole_p.update(g, r)
    shards = [(SSIM(), PSNR()), (SSIM(), PSNR())]
    for k, (g, r) in enumerate(zip(gens, gt, strict=True)):
        shards[k % 2][0].update(g, r)
        shards[k % 2][1].update(g, r)
    merged_s = shards[0][0].merge(shards[1][0])
    merged_p = shards[0][1].merge(shards[1][1])

    rs, rp = whole_s.compute(), whole_p.compute()
    assert rs.higher_is_better and rp.higher_is_better
    assert rs.n_clips == 4 and rs.per_clip["c12"] == pytest.approx(1.0)
    expected = np.mean([ssim_clip(g.frames, r.frames) for g, r in zip(gens, gt, strict=True)])
    assert rs.value == pytest.approx(expected, abs=1e-12)
    assert merged_s.compute().value == pytest.approx(rs.value, abs=1e-12)
    assert merged_s.compute().per_clip == pytest.approx(rs.per_clip)
    assert merged_p.compute().value == pytest.approx(rp.value, abs=1e-12)
    assert rp.per_clip["c12"] == 100.0
    assert math.isinf(rp.extras["uncapped"]) and rp.extras["n_frames_capped"] == 4
    assert merged_p.compute().extras == rp.extras
    with pytest.raises(ValueError, match="already scored"):
        whole_s.update(gens[0], gt[0])
    with pytest.raises(ValueError, match="share clip ids"):
        SSIM().merge(whole_s).merge(whole_s)


def test_alignment_rule_size_and_length(frames):
    gt = Clip(frames[:6], clip_id="x")
    small = np.stack([cv2.resize(f, (180, 144), interpolation=cv2.INTER_AREA) for f in frames[:5]])
    m = SSIM()
    v = m.update(Clip(small, clip_id="x"), gt)  # resized to the GT size, compared on 5 common frames
    assert 0.5 < v < 0.99
    with pytest.raises(AlignmentError):
        SSIM().update(Clip(frames[:2], clip_id="x"), gt)  # 4 frames apart > 2
    with pytest.raises(MetricInputError):
        ssim_frames(frames[:2], frames[:3])
