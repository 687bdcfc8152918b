"""Inference on a tiny checkpoint (real weight formats, random weights): real face image + real singing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError
from singer_model.cli import infer_main
from singer_model.infer import generate_video, load_pipeline
from singer_model.tiny import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"))


@pytest.fixture(scope="module")
def face(shared_media):
    return cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def singing(shared_media):
    # 2.2 s of real singing: 55 frames = 7 windows of 8 (motion frames carried 6 times, last window trimmed)
    return media.read_audio(shared_media / "lena.wav", sample_rate=16000)[: int(2.2 * 16000)]


def test_generate_writes_mp4_of_audio_length(tiny_ckpt, face, singing, tmp_path):
    out = tmp_path / "gen.mp4"
    frames = generate_video(face, singing, tiny_ckpt, steps=2, seed=3, out=out)
    assert frames.shape == (55, 64, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 0
    info = media.probe(out)
    assert info.has_video and info.has_audio and info.fps == 25.0 and info.n_frames == 55
    assert info.audio_sample_rate == 16000 and abs(info.duration - 2.2) < 0.08
    back = media.read_audio(out, sample_rate=16000)
    assert abs(len(back) - len(singing)) < 0.08 * 16000


def test_seed_and_variants_control_output(tiny_ckpt, face, singing):
    a = singing[:16000]
    f1 = generate_video(face, a, tiny_ckpt, steps=1, seed=1, num_frames=6)
    f2 = generate_video(face, a, tiny_ckpt, steps=1, seed=1, num_frames=6)
    f3 = generate_video(face, a, tiny_ckpt, steps=1, seed=2, num_frames=6)
    assert f1.shape == (6, 64, 64, 3)
    np.testing.assert_array_equal(f1, f2)
    assert np.abs(f1.astype(int) - f3.astype(int)).mean() > 0.5
    pipe_all = load_pipeline(tiny_ckpt, "singer")
    pipe_none = load_pipeline(tiny_ckpt, "singer-no-both")
    assert pipe_all.net.msm is not None and pipe_all.net.denoising_unet.sfm is not None
    assert pipe_none.net.msm is None and pipe_none.net.denoising_unet.sfm is None
    g_all = pipe_all.generate(face, a, num_frames=4, steps=1, seed=1)
    g_none = pipe_none.generate(face, a, num_frames=4, steps=1, seed=1)
    assert np.abs(g_all.astype(int) - g_none.astype(int)).mean() > 0.1


def test_missing_weight_file_is_named(tiny_ckpt, tmp_path, face, singing):
    conf = yaml.safe_load((tiny_ckpt / "config.yaml").read_text())
    conf["weights"] = {k: str(tiny_ckpt / v) for k, v in conf["weights"].items()}
    conf["net"] = [str(tiny_ckpt / "net.safetensors"), "trainable.safetensors"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(MissingWeightsError, match="trainable.safetensors"):
        load_pipeline(tmp_path)
    conf["net"] = [str(tiny_ckpt / "net.safetensors")]
    conf["weights"]["wav2vec2"] = str(tmp_path / "nowhere")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(MissingWeightsError, match="wav2vec2"):
        load_pipeline(tmp_path)


def test_cli(tiny_ckpt, shared_media, tmp_path, singing):
    wav = media.write_wav(tmp_path / "a.wav", singing[:8000])
    out = tmp_path / "cli.mp4"
    rc = infer_main(["--checkpoint", str(tiny_ckpt), "--image", str(shared_media / "obama.jpg"), "--audio", str(wav),
                     "--out", str(out), "--steps", "2"])
    assert rc == 0
    info = media.probe(out)
    assert info.n_frames == 12 and info.has_audio
