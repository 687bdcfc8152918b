"""wav2vec2 features as Hallo's Wav2VecModel (numbers from the release) and the project's 50 Hz variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from singer_model.data import AudioEncoder, DataConfig
from singer_model.tiny import build_tiny_assets
from singer_model.train import weights_digest

FIX = Path(__file__).parent / "fixtures" / "upstream"
UPSTREAM = np.load(FIX / "hallo_wav2vec.npz")
META = json.loads((FIX / "hallo_wav2vec.json").read_text())


def _chirp() -> np.ndarray:
    t = np.arange(int(0.6 * 16000), dtype=np.float64) / 16000
    return (np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.3 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def w2v_path(tmp_path_factory) -> Path:
    from safetensors.torch import load_file

    _, path = build_tiny_assets(tmp_path_factory.mktemp("w2v"), seed=0)
    # the fixture was computed on these exact random weights
    assert weights_digest(load_file(str(path / "model.safetensors"))) == META["weights_sha256"]
    return path


@pytest.mark.parametrize("n", [7, 15, 16])
def test_before_transformer_equals_hallos_wav2vec(w2v_path, n):
    assert str(UPSTREAM["commit"]) == META["commit"]
    got = AudioEncoder(w2v_path, resample="before_transformer")(_chirp(), n)
    assert got.shape == (n, 2, 8)
    np.testing.assert_allclose(got.numpy(), UPSTREAM[f"hidden_{n}"], rtol=1e-4, atol=1e-5)


def test_after_transformer_resamples_the_50hz_hidden_states_and_differs(w2v_path):
    enc = AudioEncoder(w2v_path, resample="after_transformer")
    got = enc(_chirp(), 15)
    a = _chirp()
    a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
    with torch.no_grad():
        hs = torch.stack(enc.model(torch.from_numpy(a)[None], output_hidden_states=True).hidden_states[1:], 2)[0]
    want = F.interpolate(hs.permute(1, 2, 0), size=15, mode="linear", align_corners=True).permute(2, 0, 1)
    torch.testing.assert_close(got, want.float())
    assert np.abs(got.numpy() - UPSTREAM["hidden_15"]).max() > 1e-2  # a different feature, not a rounding


def test_resample_setting_is_checked():
    assert DataConfig().wav2vec_resample == "before_transformer"
    with pytest.raises(ValueError, match="wav2vec_resample"):
        DataConfig(wav2vec_resample="never")
