"""MSM as the SINGER release (numbers from its MultiSpectralAttentionLayer) and the project's presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from singer_model.checkpoints import MSM_PUBLISHED, from_published
from singer_model.config import MSMConfig, SingerConfig
from singer_model.msm import MultiScaleSpectralModule

FIX = Path(__file__).parent / "fixtures" / "upstream"
UP = np.load(FIX / "singer_msm.npz")
META = json.loads((FIX / "singer_msm.json").read_text())


def _loaded(cfg: MSMConfig) -> MultiScaleSpectralModule:
    """The release's weights, in its net.pth names, through the project's converter."""
    published = {MSM_PUBLISHED + k[len("state/"):]: torch.from_numpy(UP[k]) for k in UP.files if k.startswith("state/")}
    native = from_published(published)
    mod = MultiScaleSpectralModule(replace(cfg, latent_size=8)).eval()
    mod.load_state_dict({k[len("msm."):]: v for k, v in native.items()})
    return mod


@pytest.mark.parametrize("frames", [14, 16])
def test_release_preset_gives_the_release_audio_tokens(frames):
    assert META["commit"] == str(UP["commit"]) == "74153ae40dae9068440d4136364304347b6c7fd8"
    mod = _loaded(SingerConfig.singer_release().msm)
    z, audio = torch.from_numpy(UP[f"f{frames}/z"]), torch.from_numpy(UP[f"f{frames}/audio"])
    with torch.no_grad():
        np.testing.assert_allclose(mod.band_weights(z).numpy(), UP[f"f{frames}/gates"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mod(audio, z).numpy(), UP[f"f{frames}/out"], rtol=1e-4, atol=1e-5)


def test_published_preset_is_exact_at_14_frames_only_and_full_is_frame_independent():
    pub = _loaded(SingerConfig.singer_published().msm)
    full = _loaded(SingerConfig.full().msm)
    with torch.no_grad():
        z14, z16 = torch.from_numpy(UP["f14/z"]), torch.from_numpy(UP["f16/z"])
        np.testing.assert_allclose(pub.band_weights(z14).numpy(), UP["f14/gates"], rtol=1e-5)
        np.testing.assert_allclose(pub.band_weights(z16).numpy(), UP["f16/gates"] * 14 / 16, rtol=1e-5)
        # "full": the mean gate times 2 (its identity-start scale): 2/16 of the release's at 16 frames
        np.testing.assert_allclose(full.band_weights(z16).numpy(), UP["f16/gates"] * 2 / 16, rtol=1e-5)


def test_msm_starts_as_the_identity_in_the_training_presets_and_release_init_does_not():
    torch.manual_seed(0)
    audio, z = torch.randn(2, 4, 4, 16), torch.randn(2, 4, 4, 8, 8)
    for cfg in (SingerConfig.full(), SingerConfig.tiny()):
        assert cfg.msm.identity_init and cfg.msm.band_scale == 2.0
        mod = MultiScaleSpectralModule(replace(cfg.msm, latent_size=8))
        torch.testing.assert_close(mod(audio, z), audio, rtol=1e-5, atol=1e-6)  # Hallo's tokens at step 0
        mod(audio, z).square().sum().backward()
        assert mod.fc[2].weight.grad.abs().sum() > 0  # and it can learn away from the identity
    # without identity_init (as the release's random FC and the earlier default): gates ~ sigmoid(.) ~ 0.5
    rel = MultiScaleSpectralModule(MSMConfig(latent_size=8))
    gates = rel.band_weights(z).detach()
    assert 0.2 < float(gates.mean()) < 0.8 and not torch.allclose(rel(audio, z), audio, atol=1e-2)


def test_pipeline_conditions_msm_once_per_window_with_the_release_setting(tmp_path, shared_media):
    import cv2

    from shv_toolkit.core import media
    from singer_model.infer import load_pipeline
    from singer_model.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", n_frames=4)
    face = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[:16000]
    counts = {}
    for cond in ("every_step", "initial_noise"):
        conf = yaml.safe_load((ckpt / "config.yaml").read_text())
        conf["model"]["msm"]["condition"] = cond
        (ckpt / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
        pipe = load_pipeline(ckpt)
        calls, orig = [], pipe.net.encode_audio

        def spy(feats, lat, _orig=orig, _calls=calls):
            _calls.append(lat.detach().clone())
            return _orig(feats, lat)

        pipe.net.encode_audio = spy
        pipe.generate(face, audio, num_frames=8, steps=3, guidance_scale=1.0, seed=0)
        counts[cond] = calls
    assert len(counts["every_step"]) == 2 * 3  # 2 windows x 3 steps, on each step's z_t
    assert len(counts["initial_noise"]) == 2  # once per window, on the initial noise
    torch.testing.assert_close(counts["initial_noise"][0], counts["every_step"][0])  # the same seeded z_T
