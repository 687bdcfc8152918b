"""LSE-D / LSE-C against joonson/syncnet_python's ``SyncNetInstance.evaluate`` (fixture:
fixtures/upstream/lse_syncnet_python.json and the JPEG frames + audio.wav its evaluate() read).

Same seeded random SyncNet weights on both sides (``seeded_syncnet.py``), saved as a plain state dict
with ``torch.save`` (what syncnet_python's ``loadParameters`` reads) and loaded here through the
project's ``load_syncnet`` (``weights_only=True``). From the crop frames on, the project's MFCC, window
embedding, ``calc_pdist`` and min / median - min must reproduce upstream: the 25 x 31 per-window
distances to 1e-6 relative, LSE-D to 1e-6 relative (upstream averages in float32), LSE-C to 1e-4
absolute (a difference of float32 values near 470), the offset exactly. Face detection and cropping
(S3FD in upstream's run_pipeline, MediaPipe here) are a documented difference in lse.py, not compared.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.extractors.syncnet import load_syncnet
from benchmark.metrics.lse import embed_windows, offset_distances, sync_scores
from tests.benchmark.upstream.seeded_syncnet import SEED, save_torch, seeded_state, state_digest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"


@pytest.fixture(scope="module")
def upstream() -> dict:
    return json.loads((FIXTURES / "lse_syncnet_python.json").read_text())


@pytest.fixture(scope="module")
def model(checkpoint_keys, tmp_path_factory, upstream):
    state = seeded_state(checkpoint_keys / "syncnet_S.json", SEED)
    assert state_digest(state) == upstream["weights"]["state_digest"]
    path = save_torch(state, tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("__S__.") for k in raw)  # syncnet_python's own (S) key names
    net, _, sha = load_syncnet(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    return net


@pytest.fixture(scope="module")
def inputs(upstream) -> tuple[np.ndarray, np.ndarray]:
    import cv2
    from scipy.io import wavfile

    folder = FIXTURES / "lse_franck_lena"
    for name, digest in upstream["inputs"]["files_sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    jpgs = sorted(folder.glob("*.jpg"))
    crops = np.stack([cv2.imread(str(p)) for p in jpgs])  # BGR, as upstream reads them
    sr, pcm = wavfile.read(folder / "audio.wav")
    assert sr == 16000 and pcm.dtype == np.int16
    return crops, pcm


def test_fixture_names_upstream(upstream):
    assert upstream["upstream"]["repo"] == "joonson/syncnet_python"
    assert len(upstream["upstream"]["commit"]) == 40


def test_lse_reproduces_syncnet_python(upstream, model, inputs):
    crops, pcm = inputs
    assert crops.shape == (30, 224, 224, 3)
    video, audio = embed_windows(model, crops, pcm, batch_size=20)
    dists = offset_distances(video, audio, vshift=15)
    ref = np.asarray(upstream["dists"])
    assert dists.shape == ref.shape == (25, 31)
    np.testing.assert_allclose(dists, ref, rtol=1e-6)
    scores = sync_scores(dists, vshift=15)
    np.testing.assert_allclose(scores.mean_dists, upstream["mean_dists"], rtol=1e-6)
    assert scores.lse_d == pytest.approx(upstream["lse_d"], rel=1e-6)
    assert scores.lse_c == pytest.approx(upstream["lse_c"], abs=1e-4)
    assert scores.offset == upstream["offset"]
    assert scores.n_windows == 25
