"""The shipped release configs (Hallo, SINGER) resolve to the published files with release semantics, and a
config YAML file stands for a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from singer_model.data import DataConfig
from singer_model.infer import (
    DEFAULT_SCHEDULER,
    _resolve,
    checkpoint_config,
    load_pipeline,
    model_config_from,
)
from singer_model.tiny import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "singer_model" / "configs"


@pytest.mark.parametrize(("name", "net_file"), [("hallo_release", "hallo/net.pth"), ("singer_release", "singer/net.pth")])
def test_release_config_resolves_published_files_with_release_semantics(name, net_file):
    conf, base = checkpoint_config(CONFIGS / f"{name}.yaml")
    assert base == CONFIGS
    assert [_resolve(base, f) for f in conf["net"]] == [str(REPO / "pretrained_models" / net_file)]
    assert _resolve(base, conf["weights"]["vae"]) == str(REPO / "pretrained_models" / "sd-vae-ft-mse")
    mcfg = model_config_from(conf["model"])
    if name == "hallo_release":
        assert not mcfg.use_msm and not mcfg.use_sfm
    else:
        assert mcfg.use_msm and mcfg.use_sfm
        assert (mcfg.msm.frame_reduction, mcfg.msm.band_scale, mcfg.msm.condition) == ("sum", 1.0, "initial_noise")
    data = DataConfig.from_dict(conf["data"])
    assert (data.size, data.n_frames, data.masks, data.wav2vec_resample) == (512, 16, "hallo", "before_transformer")
    assert data.identity_backend == "insightface" and data.lip_expand_ratio == 2.0
    assert conf["inference"] == {"steps": 40, "guidance_scale": 3.5, "cfg_uncond": "release"}
    assert conf["scheduler"] == DEFAULT_SCHEDULER


def test_a_config_file_stands_for_a_checkpoint_directory(tmp_path, shared_media):
    import cv2

    from shv_toolkit.core import media

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", n_frames=4)
    conf = yaml.safe_load((ckpt / "config.yaml").read_text())
    conf["inference"] = {"steps": 1, "guidance_scale": 2.0}
    other = tmp_path / "elsewhere"
    other.mkdir()
    conf["weights"] = {k: str(Path("..") / "ckpt" / v) for k, v in conf["weights"].items()}
    conf["net"] = [str(Path("..") / "ckpt" / f) for f in conf["net"]]
    (other / "tiny_release.yaml").write_text(yaml.safe_dump(conf))
    pipe = load_pipeline(other / "tiny_release.yaml")
    assert pipe.defaults["steps"] == 1
    face = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[:8000]
    assert pipe.generate(face, audio, num_frames=4).shape == (4, 64, 64, 3)
