"""Classifier-free guidance as Hallo's release (training dropout, the unconditional branch at inference)
and the project's alternative, plus the checkpoint's own sampling settings."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
import torch
import yaml

from shv_toolkit.core import media
from shv_toolkit.core.errors import UsageError
from singer_model.infer import load_pipeline
from singer_model.tiny import make_tiny_checkpoint
from singer_model.train import TrainSection, cfg_dropout_case

N_DRAWS = 40000


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cfg_ckpt"), n_frames=4)


@pytest.fixture(scope="module")
def face(shared_media):
    return cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def audio(shared_media):
    return media.read_audio(shared_media / "lena.wav", sample_rate=16000)[:16000]


# ---------------------------------------------------------------------------------------------- training draws
def _freqs(tr: TrainSection) -> dict[tuple[bool, bool], float]:
    c = Counter(cfg_dropout_case(tr, s) for s in range(N_DRAWS))
    return {k: v / N_DRAWS for k, v in c.items()}


def test_release_dropout_is_two_independent_draws_as_hallo_stage2():
    f = _freqs(TrainSection(uncond_img_ratio=0.3, uncond_audio_ratio=0.2, uncond_ia_ratio=0.25))
    tol = 4 * (0.25 / N_DRAWS) ** 0.5
    assert f[(True, True)] == pytest.approx(0.3 * 0.2, abs=tol)  # uncond_ia_ratio plays no part
    assert f[(True, False)] == pytest.approx(0.3 * 0.8, abs=tol)
    assert f[(False, True)] == pytest.approx(0.7 * 0.2, abs=tol)
    assert f[(False, False)] == pytest.approx(0.7 * 0.8, abs=tol)
    d = _freqs(TrainSection())  # Hallo's stage2.yaml: 0.05 each
    assert d[(False, False)] == pytest.approx(0.9025, abs=tol) and d[(True, True)] == pytest.approx(0.0025, abs=tol)


def test_bucket_dropout_is_three_exclusive_buckets():
    f = _freqs(TrainSection(cfg_dropout="buckets", uncond_img_ratio=0.3, uncond_audio_ratio=0.2, uncond_ia_ratio=0.25))
    tol = 4 * (0.25 / N_DRAWS) ** 0.5
    assert f[(True, False)] == pytest.approx(0.3, abs=tol)
    assert f[(False, True)] == pytest.approx(0.2, abs=tol)
    assert f[(True, True)] == pytest.approx(0.25, abs=tol)
    assert f[(False, False)] == pytest.approx(0.25, abs=tol)


def test_draws_depend_on_seed_and_step_only_and_bad_settings_are_refused():
    tr = TrainSection(uncond_img_ratio=0.5, uncond_audio_ratio=0.5)
    a = [cfg_dropout_case(tr, s) for s in range(64)]
    assert a == [cfg_dropout_case(tr, s) for s in range(64)]
    assert a != [cfg_dropout_case(TrainSection(uncond_img_ratio=0.5, uncond_audio_ratio=0.5, seed=1), s) for s in range(64)]
    with pytest.raises(UsageError, match="cfg_dropout"):
        TrainSection(cfg_dropout="hallo")
    with pytest.raises(UsageError, match="uncond_audio_ratio"):
        TrainSection(uncond_audio_ratio=1.5)


# ---------------------------------------------------------------------------------------------- inference
class _Spy:
    """Records what each denoising call of the pipeline received (the net's forward, wrapped)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.calls = net, []
        self._orig = net.forward

    def __enter__(self) -> _Spy:
        def rec(*args, **kwargs):
            names = ("noisy_latents", "timesteps", "ref_latents", "face_emb", "audio_features", "face_region_mask")
            call = dict(zip(names, args, strict=False)) | kwargs
            self.calls.append({k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in call.items()})
            return self._orig(*args, **kwargs)

        self.net.forward = rec
        return self

    def __exit__(self, *exc) -> None:
        del self.net.forward


def test_release_uncond_branch_keeps_reference_and_motion_and_zeroes_identity_facelocator_audio(tiny_ckpt, face, audio):
    pipe = load_pipeline(tiny_ckpt)
    net = pipe.net
    with _Spy(net) as spy:  # the two branches as two forwards
        pipe.generate(face, audio, num_frames=8, steps=2, guidance_scale=3.5, cfg_uncond="release", seed=1,
                      batch_cfg=False)
    assert len(spy.calls) == 2 * 2 * 2  # 2 windows x 2 steps x (cond, uncond)
    cond, unc = spy.calls[0], spy.calls[1]
    # the FaceLocator feature is computed once per clip and passed in
    assert cond["face_emb"].abs().sum() > 0 and cond["mask_features"].abs().sum() > 0
    assert not cond.get("uncond_img_fwd") and cond["audio_tokens"].abs().sum() > 0
    assert unc["face_emb"].abs().sum() == 0  # identity: ImageProj of zeros
    # no FaceLocator feature (Hallo zeroes its output)
    assert unc["face_region_mask"] is None and unc.get("mask_features") is None
    assert not unc.get("uncond_img_fwd") and unc["reference_features"] is not None  # reference + motion stay
    assert unc["audio_tokens"].abs().sum() == 0
    # the unconditional reference features are the reference UNet's on the same latents with the zero identity
    ref_c, ref_u = cond["reference_features"], unc["reference_features"]
    assert ref_c.keys() == ref_u.keys() and any(not ref_c[k].equal(ref_u[k]) for k in ref_c)
    # the second window's motion frames reach both branches: its features differ from the first window's
    w2 = spy.calls[5]
    assert any(not w2["reference_features"][k].equal(ref_u[k]) for k in ref_u)

    with _Spy(net) as spy:  # default: both branches in one forward of batch 2 (the release's pipeline)
        pipe.generate(face, audio, num_frames=8, steps=2, guidance_scale=3.5, cfg_uncond="release", seed=1)
    assert len(spy.calls) == 2 * 2  # 2 windows x 2 steps
    both = spy.calls[0]
    assert both["noisy_latents"].shape[0] == 2 and both["noisy_latents"][0].equal(both["noisy_latents"][1])
    assert both["face_emb"][0].equal(cond["face_emb"][0]) and both["face_emb"][1].abs().sum() == 0
    assert both["mask_features"][0].equal(cond["mask_features"][0]) and both["mask_features"][1].abs().sum() == 0
    assert both["audio_tokens"][0].equal(cond["audio_tokens"][0]) and both["audio_tokens"][1].abs().sum() == 0
    for k, v in both["reference_features"].items():  # sample-major: cond's (1 + M) rows, then uncond's
        assert torch.allclose(v, torch.cat([ref_c[k], ref_u[k]]), atol=1e-6)


def test_drop_reference_uncond_branch_drops_reference_identity_audio_keeps_facelocator(tiny_ckpt, face, audio):
    pipe = load_pipeline(tiny_ckpt)
    with _Spy(pipe.net) as spy:
        frames_d = pipe.generate(face, audio, num_frames=4, steps=2, guidance_scale=3.5, cfg_uncond="drop_reference",
                                 seed=1)
    unc = spy.calls[1]
    assert unc["uncond_img_fwd"] and unc["face_emb"].abs().sum() == 0
    assert unc["mask_features"].abs().sum() > 0 and unc["audio_tokens"].abs().sum() == 0
    frames_r = pipe.generate(face, audio, num_frames=4, steps=2, guidance_scale=3.5, cfg_uncond="release", seed=1)
    assert np.abs(frames_d.astype(int) - frames_r.astype(int)).mean() > 0.1
    with pytest.raises(UsageError, match="cfg_uncond"):
        pipe.generate(face, audio, num_frames=4, steps=1, cfg_uncond="none")


def test_pipeline_uses_the_checkpoints_inference_settings(tiny_ckpt, face, audio, tmp_path):
    conf = yaml.safe_load((tiny_ckpt / "config.yaml").read_text())
    conf["weights"] = {k: str(tiny_ckpt / v) for k, v in conf["weights"].items()}
    conf["net"] = [str(tiny_ckpt / f) for f in conf["net"]]
    conf["inference"] = {"steps": 3, "guidance_scale": 1.0, "cfg_uncond": "drop_reference"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    pipe = load_pipeline(tmp_path)
    assert pipe.defaults == {"steps": 3, "guidance_scale": 1.0, "cfg_uncond": "drop_reference"}
    with _Spy(pipe.net) as spy:
        pipe.generate(face, audio, num_frames=4, seed=0)
    assert len(spy.calls) == 3  # 3 steps, guidance 1: no unconditional branch
    with _Spy(pipe.net) as spy:
        pipe.generate(face, audio, num_frames=4, seed=0, steps=2, guidance_scale=2.0)  # the caller wins
    assert len(spy.calls) == 4 and spy.calls[1]["uncond_img_fwd"]  # mode still the checkpoint's
    del conf["inference"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    assert load_pipeline(tmp_path).defaults == {"steps": 40, "guidance_scale": 3.5, "cfg_uncond": "release"}


def test_dtype_resolution_and_low_precision_inference(tiny_ckpt, face, audio):
    from singer_model.infer import resolve_dtype

    assert resolve_dtype(None, "cuda") == resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("fp16", "cpu") == torch.float16 and resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="dtype"):
        resolve_dtype("int8", "cpu")
    ref = load_pipeline(tiny_ckpt).generate(face, audio, num_frames=8, steps=2, seed=0)
    for dt in (torch.bfloat16, torch.float16):
        pipe = load_pipeline(tiny_ckpt, dtype=dt)
        assert next(pipe.net.parameters()).dtype == dt and next(pipe.pre.vae.parameters()).dtype == dt
        got = pipe.generate(face, audio, num_frames=8, steps=2, seed=0)  # two windows: motion frames carried
        assert got.shape == ref.shape
        assert np.abs(got.astype(int) - ref.astype(int)).mean() < 4.0  # the same video up to rounding
