"""LSE-D / LSE-C: MFCC equals python_speech_features, the offset search finds a known shift, the
face crop follows run_pipeline.py, and the whole pipeline runs on a real face video with real speech."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from benchmark.extractors.syncnet import SyncNet
from benchmark.metrics.base import Clip, MetricInputError
from benchmark.metrics.lse import (
    LSE,
    FaceTrack,
    LSEConfig,
    build_tracks,
    crop_track,
    embed_windows,
    lse_clip,
    mfcc,
    offset_distances,
    sync_scores,
    to_pcm16,
)
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

# python_speech_features 0.6 (PyPI sdist), mfcc(seg, 16000) with its defaults, where seg is
# speech_two_speakers.wav (int16, 16 kHz) samples [126400, 128000): 9 frames, the last zero-padded.
PSF_MFCC = np.array([
    [19.330315143816, 14.089177477981, -40.779709303574, -33.922226623491, -13.353014672184, -7.473764118035,
     6.745148119073, -11.100222070816, -9.673321328083, -4.134608900188, -21.783509362499, -18.230375186815,
     -3.767645814065],
    [19.389435379322, 27.869129363663, -50.27209301484, -20.930294515958, -15.43392384959, -5.56364989632,
     13.838189085539, -16.018280727274, -2.061000429281, -2.586983725865, -24.373284203204, -13.844708447799,
     -5.718015814171],
    [19.326910060743, 22.861928954658, -43.548896373987, -28.936369301819, -10.707031271733, 4.44323541558,
     15.771488924924, -7.846678804212, 4.265280689991, -1.269448325398, -29.651179836436, -19.352689590538,
     -8.693456119175],
    [19.280663485028, 18.018424939194, -46.254833987554, -37.57259088182, -19.084141920586, -9.710872783226,
     -1.415648102894, -18.900732406587, -9.772361526335, -11.072866959454, -29.65596707364, -17.153487329764,
     -5.526767867527],
    [19.283198985194, 14.4991822925, -28.669745819556, -30.276639927455, -7.750501244212, 4.841327048178,
     4.246131980022, -3.247470170874, -0.423171459349, -6.149027705076, -18.456244265335, -11.521435155583,
     0.265584308423],
    [19.213441521768, 27.400041456746, -35.560784476434, -21.362773987557, -8.788196337458, 4.219323645222,
     8.768068845257, -4.139675550602, 2.381294585546, -8.02785451821, -19.011902976186, -7.859343633002,
     -4.022567845626],
    [19.112499187455, 17.892672774638, -28.056081382545, -26.176999996946, -8.097500387882, 6.131198265434,
     7.648515772077, -0.7992971408, 1.639002260032, -6.597910091694, -17.983347211283, -11.538880788305,
     -1.732755519684],
    [18.915188710374, 13.322073997794, -32.625210796362, -28.929883541349, -11.362169284679, 3.060012536743,
     7.9535967864, -5.84505312327, -3.377563636604, -11.57327746219, -26.471704811771, -18.830326670114,
     -11.523274309061],
    [18.64790318412, 21.442073283325, -41.271976687632, -26.19595551538, -14.98452823291, -1.375477040868,
     7.16223046885, -15.120652369269, -3.06188899412, -10.511423642507, -23.204046007026, -10.483063340194,
     -9.343614447022],
])  # fmt: skip


@pytest.fixture(scope="module")
def speech(shared_media: Path) -> np.ndarray:
    sr, a = wavfile.read(shared_media / "speech_two_speakers.wav")
    assert sr == 16000 and a.dtype == np.int16
    return a


# ------------------------------------------------------------------------------------------- MFCC


def _mfcc_by_formula(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    """An independent, loop-by-loop MFCC from the python_speech_features definitions."""
    x = x.astype(np.float64)
    y = [x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))]
    flen, step, nfft, nfilt = 400, 160, 512, 26
    n_frames = 1 if len(y) <= flen else 1 + math.ceil((len(y) - flen) / step)
    y = y + [0.0] * ((n_frames - 1) * step + flen - len(y))

    def mel(f: float) -> float:
        return 2595 * math.log10(1 + f / 700)

    def hz(m: float) -> float:
        return 700 * (10 ** (m / 2595) - 1)

    lo, hi = mel(0), mel(sr / 2)
    edges = [math.floor((nfft + 1) * hz(lo + (hi - lo) * j / (nfilt + 1)) / sr) for j in range(nfilt + 2)]
    out = np.zeros((n_frames, 13))
    for t in range(n_frames):
        frame = np.array(y[t * step : t * step + flen])
        spec = np.zeros(nfft)
        spec[:flen] = frame
        power = np.abs(np.fft.fft(spec)[: nfft // 2 + 1]) ** 2 / nfft
        logs = []
        for j in range(nfilt):
            a, b, c = edges[j], edges[j + 1], edges[j + 2]
            e = sum(power[k] * (k - a) / (b - a) for k in range(a, b))
            e += sum(power[k] * (c - k) / (c - b) for k in range(b, c))
            logs.append(math.log(e))
        for n in range(13):
            scale = math.sqrt(1 / nfilt) if n == 0 else math.sqrt(2 / nfilt)
            dct = scale * sum(
                logs[j] * math.cos(math.pi * n * (2 * j + 1) / (2 * nfilt)) for j in range(nfilt)
            )
            out[t, n] = dct * (1 + 11 * math.sin(math.pi * n / 22))
        out[t, 0] = math.log(power.sum())
    return out


def test_mfcc_matches_python_speech_features(speech: np.ndarray) -> None:
    got = mfcc(speech[126400:128000], 16000)
    assert got.shape == PSF_MFCC.shape == (9, 13)
    np.testing.assert_allclose(got, PSF_MFCC, rtol=1e-10, atol=1e-9)


def test_mfcc_matches_the_formula_on_real_speech(speech: np.ndarray) -> None:
    seg = speech[120000:128123]  # 0.5 s + a partial frame: 1 + ceil((8123 - 400) / 160) = 50 frames
    got = mfcc(seg)
    ref = _mfcc_by_formula(seg)
    assert got.shape == (50, 13)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-8)
    # 100 Hz: 2 s of audio give 200 frames (one per 10 ms)
    assert mfcc(speech[:32000]).shape == (199, 13)


def test_pcm16_conversion_matches_ffmpeg_rounding() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, 1 / 65536, 3 / 65536, -0.25 / 32768], np.float32)
    np.testing.assert_array_equal(to_pcm16(x), [0, 16384, -16384, 32767, -32768, 32767, 0, 2, 0])
    ints = np.array([5, -7], np.int16)
    assert to_pcm16(ints) is ints


# ---------------------------------------------------------------------------------- offset search


def test_offset_search_by_hand() -> None:
    # audio embeddings a_i (D = 1) and video embeddings v_i = a_{i+1} (v_5 has no partner);
    # vshift 1: column j compares v_i with a_{i+j-1}, zero outside 0..5.
    a = np.array([[0.0], [4.0], [1.0], [6.0], [2.0], [8.0]])
    v = np.array([[4.0], [1.0], [6.0], [2.0], [8.0], [3.0]])
    d = offset_distances(v, a, vshift=1)
    by_hand = np.array([[4, 4, 0], [1, 3, 0], [2, 5, 0], [1, 4, 0], [2, 6, 0], [1, 5, 3]], float)
    np.testing.assert_allclose(d, by_hand, atol=2e-6)
    s = sync_scores(d, vshift=1)
    # means per column: 11/6, 27/6, 3/6 -> min 0.5 at column 2, median 11/6
    np.testing.assert_allclose(s.mean_dists, [11 / 6, 4.5, 0.5], atol=2e-6)
    assert s.offset == 1 - 2 == -1
    assert s.lse_d == pytest.approx(0.5, abs=2e-6)
    assert s.lse_c == pytest.approx(11 / 6 - 0.5, abs=2e-6)
    assert s.n_windows == 6


@pytest.mark.parametrize("k", [-15, -6, 0, 3, 11, 15])
def test_offset_search_finds_known_shift(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    n, dim, vshift = 60, 32, 15
    audio = rng.normal(size=(n, dim))
    video = rng.normal(size=(n, dim))  # frames whose partner is outside the clip: unrelated
    for i in range(n):
        if 0 <= i + k < n:
            video[i] = audio[i + k] + 0.05 * rng.normal(size=dim)
    d = offset_distances(video, audio, vshift)
    assert d.shape == (n, 2 * vshift + 1)
    # explicit reference: distance of v_i to a_{i+off}, the zero vector when out of range
    expected = np.zeros((n, 2 * vshift + 1))
    for i in range(n):
        for j, off in enumerate(range(-vshift, vshift + 1)):
            partner = audio[i + off] if 0 <= i + off < n else np.zeros(dim)
            expected[i, j] = np.linalg.norm(video[i] - partner + 1e-6)
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    s = sync_scores(d)
    mdist = expected.mean(axis=0)
    assert s.offset == -k  # video frame i shows the sound at i + k: audio lags by k frames
    assert s.lse_d == pytest.approx(mdist.min(), rel=1e-5)
    assert s.lse_c == pytest.approx(np.median(mdist) - mdist.min(), rel=1e-5)
    assert len(s.mean_dists) == 31 and s.lse_c > 1.0


# ------------------------------------------------------------------------------- tracking and crop


def test_tracks_link_interpolate_and_split() -> None:
    cfg = LSEConfig()
    face = np.array([100.0, 100.0, 200.0, 200.0, 0.9])
    other = np.array([400.0, 50.0, 480.0, 130.0, 0.8])
    dets: list[np.ndarray] = []
    for f in range(40):
        boxes = []
        if not 10 <= f < 13:  # three missed frames
            boxes.append(face + [f, 0, f, 0, 0])  # moving right by 1 px a frame
        if f < 4:
            boxes.append(other)  # a second face, only 4 frames: too short
        dets.append(np.array(boxes).reshape(-1, 5))
    tracks = build_tracks(dets, cfg)
    assert len(tracks) == 1
    t = tracks[0]
    np.testing.assert_array_equal(t.frames, np.arange(40))
    np.testing.assert_allclose(t.boxes[11], [111, 100, 211, 200])  # interpolated over the gap
    assert len(build_tracks(dets, LSEConfig(min_track=3))) == 2
    assert build_tracks(dets, LSEConfig(min_face_size=120)) == []  # reference's 100 px rule, moved
    # a gap longer than num_failed_det ends the track
    gap = [d if not 5 <= f < 35 else np.zeros((0, 5)) for f, d in enumerate(dets)]
    split = build_tracks(gap, LSEConfig(min_track=1))
    assert [(int(s.frames[0]), len(s.frames)) for s in split if s.boxes[0, 0] < 300] == [(0, 5), (35, 5)]


def test_crop_geometry_follows_run_pipeline() -> None:
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    frames = np.stack([frame] * 3)
    # box 100 px square at (100..200, 100..200): bs = 50, cs = 0.4 -> rows [100, 240), cols [80, 220)
    track = FaceTrack(np.arange(3), np.tile([100.0, 100.0, 200.0, 200.0], (3, 1)))
    crops = crop_track(frames, track, LSEConfig(size=140))
    assert crops.shape == (3, 140, 140, 3)
    np.testing.assert_array_equal(crops[1], frame[100:240, 80:220, ::-1])  # BGR
    # near the bottom-right corner the crop leaves the frame: padded with 110
    track = FaceTrack(np.arange(3), np.tile([330.0, 230.0, 390.0, 290.0], (3, 1)))  # bs = 30
    crop = crop_track(frames, track, LSEConfig(size=84))[0]  # rows [230, 314), cols [318, 402)
    np.testing.assert_array_equal(crop[:70, :82], frame[230:300, 318:400, ::-1])
    assert (crop[70:] == 110).all() and (crop[:, 82:] == 110).all()


class _Probe(torch.nn.Module):
    """Stands in for SyncNet to check which frames and MFCC columns form each window."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :, 0, 0]  # (N, 5): the frame ids written in the blue channel

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 3, :]  # (N, 20): one MFCC row over the window


def test_windows_pair_frames_with_mfcc_columns(speech: np.ndarray) -> None:
    t = 12
    crops = np.zeros((t, 8, 8, 3), np.uint8)
    crops[..., 0] = np.arange(t)[:, None, None]  # BGR: channel 0 is what the network sees first
    pcm = speech[120000 : 120000 + 11 * 640 + 100]  # audio shorter than the video: 11 frames
    v, a = embed_windows(_Probe(), crops, pcm, batch_size=4)  # type: ignore[arg-type]
    n = min(t, len(pcm) // 640) - 5
    assert v.shape == (n, 5) and a.shape == (n, 20)
    np.testing.assert_array_equal(v.numpy(), np.arange(n)[:, None] + np.arange(5)[None, :])
    cols = mfcc(pcm).T[3].astype(np.float32)
    for i in range(n):
        np.testing.assert_array_equal(a[i].numpy(), cols[4 * i : 4 * i + 20])
    with pytest.raises(MetricInputError, match="too short"):
        embed_windows(_Probe(), crops[:5], pcm)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- pipeline on real media


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(SyncNet().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def real_pair(shared_media: Path, speech: np.ndarray) -> tuple[Clip, Clip]:
    """2 s of a real talking face (franck.mp4) with 2 s of real speech as the driving audio."""
    frames = media.read_video(shared_media / "franck.mp4", fps=25, end=2.0)
    audio = speech[16000:48000].astype(np.float32) / 32768
    gen = Clip(frames, 25.0, None, 16000, "franck")
    gt = Clip(frames, 25.0, audio, 16000, "franck")
    return gen, gt


@pytest.fixture(scope="module")
def scored(weights_file: Path, real_pair: tuple[Clip, Clip]) -> LSE:
    metric = LSE(weights=weights_file)
    assert metric.update(*real_pair) is None
    return metric


def test_pipeline_on_real_face_and_speech(scored: LSE, weights_file: Path) -> None:
    rec = scored.per_clip["franck"]
    assert rec.track_start == 0 and rec.track_frames == 50 and rec.n_faces_tracks == 1
    assert rec.n_windows == 45  # min(50 frames, 32000 / 640) - 5
    assert len(rec.mean_dists) == 31 and all(math.isfinite(x) and x > 0 for x in rec.mean_dists)
    assert rec.lse_d == pytest.approx(min(rec.mean_dists))
    assert rec.lse_c == pytest.approx(sorted(rec.mean_dists)[15] - min(rec.mean_dists))
    assert -15 <= rec.offset <= 15 and rec.offset == 15 - int(np.argmin(rec.mean_dists))
    d, c = scored.results()
    assert (d.name, d.higher_is_better, c.name, c.higher_is_better) == ("lse_d", False, "lse_c", True)
    assert d.value == pytest.approx(rec.lse_d) and c.value == pytest.approx(rec.lse_c)
    assert d.per_clip == {"franck": rec.lse_d} and c.n_clips == 1
    assert d.extras["weights_sha256"] == sha256_file(weights_file)
    assert scored.extractor_hashes() == {"syncnet_v2": sha256_file(weights_file)}
    assert d.extras["offsets"] == {"franck": rec.offset}
    assert scored.compute().name == "lse_d"


def test_pure_function_agrees_and_merge_is_exact(scored: LSE, real_pair: tuple[Clip, Clip]) -> None:
    gen, gt = real_pair
    # a second, shorter clip (1.2 s) scored by the pure function and by another shard
    short_gen = Clip(gen.frames[:30], 25.0, None, 16000, "franck-short")
    short_gt = Clip(gt.frames[:30], 25.0, gt.audio[:19200], 16000, "franck-short")
    shard = LSE(model=scored.model, detector=scored.detector)
    shard.update(short_gen, short_gt)
    pure = lse_clip(short_gen.frames, short_gt.audio, scored.model, scored.detector)
    assert shard.per_clip["franck-short"].lse_d == pure.lse_d and pure.n_windows == 25
    merged = LSE(model=scored.model, detector=scored.detector).merge(scored).merge(shard)
    d, c = merged.results()
    assert d.n_clips == 2
    assert d.value == pytest.approx((scored.per_clip["franck"].lse_d + pure.lse_d) / 2, rel=1e-12)
    assert c.value == pytest.approx((scored.per_clip["franck"].lse_c + pure.lse_c) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="share clip ids"):
        merged.merge(shard)
    # shards travel between worker processes by pickle; the state survives exactly
    again = pickle.loads(pickle.dumps(shard))
    assert again.per_clip == shard.per_clip
    assert LSE(model=scored.model).merge(scored).merge(again).results()[1].value == c.value


def test_unscorable_clips_raise_and_are_recorded(scored: LSE, real_pair: tuple[Clip, Clip]) -> None:
    gen, gt = real_pair
    metric = LSE(model=scored.model, detector=scored.detector)
    with pytest.raises(MetricInputError, match="no audio"):
        metric.update(gen, Clip(gt.frames, 25.0, None, 16000, "silent"))
    blank = Clip(np.full((20, 96, 96, 3), 128, np.uint8), 25.0, None, 16000, "blank")
    blank_gt = Clip(blank.frames, 25.0, gt.audio[:12800], 16000, "blank")
    with pytest.raises(MetricInputError, match="no face track"):
        metric.update(blank, blank_gt)
    assert "blank" in metric.failed and metric.results()[0].extras["failed"]["blank"]
    assert metric.results()[0].value is None and metric.results()[0].n_clips == 0


def test_missing_weights_names_file_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHV_SYNCNET_WEIGHTS", raising=False)
    monkeypatch.delenv("SHV_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingWeightsError) as info:
        LSE()
    msg = str(info.value)
    assert "syncnet_v2.model" in msg and "download_model.sh" in msg
    assert "robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model" in msg
