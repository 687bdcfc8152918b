"""Conditioning inputs on real media: wav2vec2 per-frame features, windows, face/lip masks, cache keys."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError, MissingWeightsError
from singer_model.data import (
    AudioEncoder,
    ClipCache,
    DataConfig,
    FaceLandmarker,
    IdentityEmbedder,
    cache_key,
    face_info,
    window_features,
)
from singer_model.tiny import build_tiny_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_tiny_assets(tmp_path_factory.mktemp("assets"))


def test_window_features_clamps_edges():
    feats = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 2, 3)
    w = window_features(feats, 5)
    assert w.shape == (6, 5, 2, 3)
    assert w[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert w[3, :, 0, 0].tolist() == [1, 2, 3, 4, 5]
    assert w[5, :, 0, 0].tolist() == [3, 4, 5, 5, 5]


def test_audio_features_one_vector_per_frame(assets, shared_media):
    enc = AudioEncoder(assets[1])
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[:32000]
    f = enc(audio, 50)
    assert f.shape == (50, enc.layers, enc.dim) and torch.isfinite(f).all()
    # all hidden layers, not copies of one: layers differ
    assert not torch.allclose(f[:, 0], f[:, 1])
    # loud singing vs silence give different features
    assert (enc(np.zeros(32000, np.float32), 50) - f).abs().mean() > 1e-3
    with pytest.raises(MissingWeightsError, match="config.json"):
        AudioEncoder(assets[1].parent / "missing")


def test_face_and_lip_masks_on_real_face(shared_media):
    img = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)
    lm = FaceLandmarker()
    try:
        info = face_info(img, lm, DataConfig())
        with pytest.raises(MediaError):
            face_info(np.zeros((128, 128, 3), np.uint8), lm, DataConfig())
    finally:
        lm.close()
    face, lip = info.face_mask, info.lip_mask
    assert 0.02 < face.mean() < 0.9 and 0 < lip.sum() < 0.3 * face.sum()
    assert (face[lip > 0] > 0).all()  # lips inside the face box
    ys = np.nonzero(lip)[0]
    fy = np.nonzero(face)[0]
    assert ys.mean() > fy.mean()  # lips in the lower half of the face
    emb = IdentityEmbedder(8, backend="fallback")
    e1 = emb(img, info.box)
    assert e1.shape == (8,) and abs(float(e1.norm()) - 1) < 1e-5
    torch.testing.assert_close(e1, emb(img, info.box))


def test_cache_key_and_invalidation(assets, tmp_path):
    k1 = cache_key(DataConfig(size=64), str(assets[0]), str(assets[1]), "fallback", {"layers": 2})
    assert k1 == cache_key(DataConfig(size=64), str(assets[0]), str(assets[1]), "fallback", {"layers": 2})
    assert k1 != cache_key(DataConfig(size=128), str(assets[0]), str(assets[1]), "fallback", {"layers": 2})
    assert k1 != cache_key(DataConfig(size=64), str(assets[0]), str(assets[1]), "insightface", {"layers": 2})
    c = ClipCache(tmp_path, k1)
    c.put("clip/1", [["a.mp4", 10, 1]], {"x": torch.ones(2)})
    assert c.get("clip/1", [["a.mp4", 10, 1]])["x"].tolist() == [1, 1]
    assert c.get("clip/1", [["a.mp4", 11, 1]]) is None  # source changed
    assert c.get("other", []) is None
