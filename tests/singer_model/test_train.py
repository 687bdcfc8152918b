"""Tiny SINGER training on CPU on manifests built from the bundled real sample."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from shv_toolkit.core.atomic import PARTIAL_MARK
from shv_toolkit.core.errors import UsageError
from singer_model.cli import train_main
from singer_model.infer import load_pipeline
from singer_model.tiny import build_tiny_assets
from singer_model.train import TrainConfig, Trainer, list_checkpoints, train

CONFIGS = Path(__file__).resolve().parents[2] / "singer_model" / "configs"


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> TrainConfig:
    root = tmp_path_factory.mktemp("tiny_train")
    build_tiny_assets(root / "tiny_assets")
    shutil.copy(CONFIGS / "tiny.yaml", root / "tiny.yaml")
    return TrainConfig.from_file(root / "tiny.yaml")


@pytest.fixture(scope="module")
def manifest(sample_build) -> Path:
    return sample_build[0] / "train.parquet"


@pytest.fixture(scope="module")
def prepared(tiny_cfg, manifest, tmp_path_factory) -> Path:
    """A run directory whose cache is filled (copied into later runs to save time)."""
    out = tmp_path_factory.mktemp("prepared")
    Trainer(tiny_cfg, manifest, out, progress=False)
    return out


def _fresh(prepared: Path, dst: Path) -> Path:
    shutil.copytree(prepared / "cache", dst / "cache")
    return dst


def _losses(out: Path) -> dict[int, float]:
    with (out / "train_log.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_config_files_parse():
    full = TrainConfig.from_file(CONFIGS / "singer_full.yaml")
    assert full.data.size == 512 and full.data.n_frames == 16
    assert full.train.learning_rate == 1e-5 and full.train.max_steps == 17000
    assert full.train.mixed_precision == "bf16" and full.train.gradient_checkpointing
    assert full.train.uncond_img_ratio == full.train.uncond_audio_ratio == 0.05
    assert set(full.train.trainable) == {"audioproj.", "msm.", "denoising_unet.sfm."}


def test_fixed_batch_loss_decreases_and_only_trainables_change(tiny_cfg, manifest, prepared, tmp_path):
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, noise_offset=0.0, snr_gamma=None))
    tr = Trainer(cfg, manifest, _fresh(prepared, tmp_path), progress=False)
    net = tr.unwrapped
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == set(tr.trainable_names)
    assert any(n.startswith("msm.") for n in trainable) and any(n.startswith("denoising_unet.sfm.") for n in trainable)
    assert all(n.startswith(("audioproj.", "msm.", "denoising_unet.sfm.")) or ".audio_modules." in n for n in trainable)
    assert not any(n.startswith(("reference_unet.", "imageproj.", "face_locator.")) for n in trainable)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    b = tr.sample_batch()
    b.update(uncond_img=False, uncond_audio=False, timesteps=torch.tensor([300]))
    losses = [tr.train_step(b) for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < min(losses[:5]), losses
    for n, p in net.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        if n in trainable:
            continue
        assert not changed, f"frozen parameter {n} changed"
    assert sum(not torch.equal(p.detach(), before[n]) for n, p in net.named_parameters() if n in trainable) > 0.8 * len(trainable)


def test_resume_matches_uninterrupted_run_and_checkpoint_round_trip(tiny_cfg, manifest, prepared, tmp_path):
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, checkpoint_every=2, keep_last=2))
    a = _fresh(prepared, tmp_path / "a")
    res_a = train(cfg, manifest, a, max_steps=4, progress=False)
    assert res_a.step == 4
    b = _fresh(prepared, tmp_path / "b")
    train(cfg, manifest, b, max_steps=2, progress=False)  # "interrupted" after step 2
    (b / "checkpoints" / f".step-00000003{PARTIAL_MARK}999").mkdir()  # a checkpoint write killed half-way
    res_b = train(cfg, manifest, b, resume=True, max_steps=4, progress=False)
    la, lb = _losses(a), _losses(b)
    assert sorted(lb) == [1, 2, 3, 4]
    for s in (3, 4):
        assert lb[s] == pytest.approx(la[s], rel=1e-5, abs=1e-7), (s, la, lb)
    assert not any(PARTIAL_MARK in p.name for p in (b / "checkpoints").iterdir())
    names = [p.name for p in list_checkpoints(b)]
    assert names == ["step-00000002", "step-00000004"]
    # round trip: the final checkpoints of both runs hold the same trainable weights and state
    from safetensors.torch import load_file

    wa = load_file(str(res_a.checkpoint / "trainable.safetensors"))
    wb = load_file(str(res_b.checkpoint / "trainable.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)
    # the checkpoint directory is an inference checkpoint: its weights load back exactly
    pipe = load_pipeline(res_b.checkpoint)
    got = dict(pipe.net.named_parameters())
    for k, v in wb.items():
        torch.testing.assert_close(got[k].detach(), v)
    conf = yaml.safe_load((res_b.checkpoint / "config.yaml").read_text())
    assert conf["net"][-1] == "trainable.safetensors" and conf["data"]["n_frames"] == 4


def test_cli_trains_and_refuses_to_overwrite(tiny_cfg, manifest, prepared, tmp_path):
    out = _fresh(prepared, tmp_path / "run")
    cfg_file = tmp_path / "cfg.yaml"
    d = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    d["weights"] = {k: str(Path(v)) for k, v in tiny_cfg.weights.items() if v}
    cfg_file.write_text(yaml.safe_dump(d))
    args = ["--manifest", str(manifest), "--config", str(cfg_file), "--out", str(out), "--max-steps", "2", "--no-progress"]
    assert train_main(args) == 0
    assert list(_losses(out)) == [1, 2]
    with (out / "train_log.csv").open() as f:
        row = next(csv.DictReader(f))
    assert float(row["lr"]) > 0 and float(row["samples_per_s"]) > 0 and float(row["step_time_s"]) > 0
    assert train_main(args) == 1  # existing checkpoints without --resume
    assert train_main([*args[:-2], "3", "--no-progress", "--resume"]) == 0
    assert list(_losses(out)) == [1, 2, 3]


def test_validation_during_training_scores_generated_test_clips(tiny_cfg, manifest, prepared, tmp_path):
    """validate_every=1: after the step the trainer generates the test split's first clip with the
    current weights and scores it with benchmark.metrics (SSIM, PSNR, LMD) into val_log.csv."""
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, validate_every=1, checkpoint_every=0))
    out = _fresh(prepared, tmp_path)
    tr = Trainer(cfg, manifest, out, progress=False)
    assert tr.val_manifest.name == "test.parquet"
    tr.run(max_steps=1)
    with (out / "val_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and int(rows[0]["step"]) == 1 and int(rows[0]["clips"]) == cfg.train.val_clips
    ssim, psnr = float(rows[0]["ssim"]), float(rows[0]["psnr"])
    assert 0.0 < ssim < 1.0 and 0.0 < psnr < 100.0  # a random tiny model is not the ground truth


@pytest.mark.parametrize("scheme", ["release", "buckets"])
def test_reference_dropout_keeps_identity_as_hallo_or_drops_it_in_buckets(tiny_cfg, manifest, prepared, tmp_path,
                                                                          scheme):
    """Hallo's stage 2 skips only the reference UNet when it drops the reference (the identity embedding
    stays); the "buckets" scheme also zeroes the identity. Checkpoints name the matching inference branch."""
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, cfg_dropout=scheme))
    tr = Trainer(cfg, manifest, _fresh(prepared, tmp_path), progress=False)
    b = tr.sample_batch()
    b.update(uncond_img=True, uncond_audio=False)
    seen: dict = {}
    orig = tr.net.forward

    def rec(*args, **kwargs):
        seen.update(face_emb=args[3].detach().clone(), **kwargs)
        return orig(*args, **kwargs)

    tr.net.forward = rec
    tr.loss(b)
    assert seen["uncond_img_fwd"] and not seen["uncond_audio_fwd"] and seen["keep_graph"]
    if scheme == "release":
        assert torch.equal(seen["face_emb"], b["face_emb"]) and seen["face_emb"].abs().sum() > 0
    else:
        assert seen["face_emb"].abs().sum() == 0
    want = "release" if scheme == "release" else "drop_reference"
    assert tr.inference_config(tmp_path)["inference"]["cfg_uncond"] == want


@pytest.mark.parametrize("start_motion", ["zeros", "reference"])
def test_simulated_clip_start_motion_frames(tiny_cfg, manifest, prepared, tmp_path, start_motion):
    """start_ratio 1: every window past the clip start gets simulated-start motion frames: Hallo's grey
    frames' latents ("zeros") or the reference latent ("reference"); never the preceding latents."""
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, start_ratio=1.0, start_motion=start_motion))
    tr = Trainer(cfg, manifest, _fresh(prepared, tmp_path), progress=False)
    grey = tr.start_latent
    assert grey.shape == (4, 8, 8) and grey.abs().sum() > 0
    m = tr.unwrapped.cfg.n_motion_frames
    kinds = set()
    for _ in range(12):
        b = tr.sample_batch()
        ref, motion = b["ref"][0], b["ref"][1:1 + m]
        if all(torch.equal(x, ref) for x in motion):
            kinds.add("reference")
        elif all(torch.equal(x, grey) for x in motion):
            kinds.add("zeros")
        else:
            kinds.add("previous")
    # windows at the real clip start always get the reference; the others the simulated-start frames
    assert kinds == {"reference"} if start_motion == "reference" else "zeros" in kinds and "previous" not in kinds


@pytest.mark.parametrize(("name", "msm", "sfm", "trainable"), [
    ("singer_no_msm", False, True, {"audioproj.", "denoising_unet.sfm."}),
    ("singer_no_sfm", True, False, {"audioproj.", "msm."}),
    ("singer_no_both", False, False, {"audioproj."}),
])
def test_table3_ablation_configs_change_only_their_modules(name, msm, sfm, trainable):
    from singer_model.infer import model_config_from

    full = TrainConfig.from_file(CONFIGS / "singer_full.yaml")
    abl = TrainConfig.from_file(CONFIGS / f"{name}.yaml")
    mcfg = model_config_from(abl.model)
    assert (mcfg.use_msm, mcfg.use_sfm) == (msm, sfm)
    assert set(abl.train.trainable) == trainable
    assert replace(abl.train, trainable=full.train.trainable) == full.train  # everything else inherited
    assert abl.data == full.data and abl.weights == full.weights and abl.inference == full.inference
    assert abl.weights["hallo_net"].endswith("pretrained_models/hallo/net.pth") and Path(abl.weights["vae"]).is_absolute()


def test_config_base_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UsageError, match="cycle"):
        TrainConfig.from_file(tmp_path / "a.yaml")
