"""``shv-train`` as two CPU processes (torchrun, gloo): every CFG-dropout case, identical weights, resume.

Before the fix the run hung: a step whose CFG dropout zeroed the audio left ``audioproj`` and ``msm``
without gradients and the draws differed per process, so one process waited in ``gather(loss)`` while the
other waited in ``backward`` for an all-reduce; without a GPU, accelerate also ran the processes unjoined.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from singer_model.tiny import build_tiny_assets
from singer_model.train import TrainSection, cfg_dropout_case, weights_digest

CONFIGS = Path(__file__).resolve().parents[2] / "singer_model" / "configs"
CASES = {(False, False), (True, False), (False, True), (True, True)}
#: ratios high enough that 10 steps (seed 0) meet every case; the default 5 % would need hundreds
RATIOS = {"uncond_img_ratio": 0.5, "uncond_audio_ratio": 0.5, "seed": 0}


def _shv_train() -> str:
    exe = Path(sys.executable).with_name("shv-train")
    found = str(exe) if exe.is_file() else shutil.which("shv-train")
    assert found, "the shv-train console script is not installed"
    return found


def _torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ACCELERATE_USE_CPU", None)  # the trainer must join the processes on its own
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", _shv_train(), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # this test's own torchrun and its two workers
        out, _ = proc.communicate()
        pytest.fail(f"2-process training did not finish within {timeout} s (hang):\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "train_log.csv").open() as f:
        return list(csv.DictReader(f))


def _state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def test_release_draws_cover_every_case_in_both_halves():
    tr = TrainSection(**RATIOS)
    assert {cfg_dropout_case(tr, s) for s in range(10)} == CASES
    assert {cfg_dropout_case(tr, s) for s in range(10, 20)} == CASES


def test_two_process_training_covers_every_cfg_case_keeps_replicas_identical_and_resumes(sample_build, tmp_path):
    from safetensors.torch import load_file

    assets = tmp_path / "tiny_assets"
    build_tiny_assets(assets)
    d = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    d["weights"] = {"vae": str(assets / "vae"), "wav2vec2": str(assets / "wav2vec2")}
    d["train"].update(RATIOS, checkpoint_every=10, keep_last=3)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(d))
    manifest = sample_build[0] / "train.parquet"
    out = tmp_path / "run"
    common = ["--manifest", str(manifest), "--config", str(cfg), "--no-progress"]
    _torchrun([*common, "--out", str(out), "--max-steps", "20"])

    rows = _log(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 21))  # one writer: the main process
    seen = [(bool(int(r["uncond_img"])), bool(int(r["uncond_audio"]))) for r in rows]
    assert set(seen[:10]) == CASES and set(seen[10:]) == CASES
    ckpts = {p.name: p for p in (out / "checkpoints").iterdir()}
    assert set(ckpts) == {"step-00000010", "step-00000020"}
    for ckpt in ckpts.values():
        st = _state(ckpt)
        # both processes took part and held bit-identical trainable weights (checked by the trainer too)
        assert st["world_size"] == 2 and len(st["numpy_rng_ranks"]) == 2
        file_digest = weights_digest(load_file(str(ckpt / "trainable.safetensors")))
        assert st["weights_sha256"] == [file_digest, file_digest]
        rng = load_file(str(ckpt / "rng.safetensors"))
        assert {"torch_cpu", "generator", "torch_cpu.rank1", "generator.rank1"} <= set(rng)
        assert not rng["generator"].equal(rng["generator.rank1"])  # the processes draw different noise
    first = load_file(str(ckpts["step-00000010"] / "trainable.safetensors"))
    last = load_file(str(ckpts["step-00000020"] / "trainable.safetensors"))
    assert all(not first[k].equal(last[k]) for k in first if k.startswith(("audioproj.", "msm.")))

    # resume a copy interrupted after step 10: it must retrace the uninterrupted run exactly
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000020")
    with (resumed / "train_log.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:10])
    _torchrun([*common, "--out", str(resumed), "--max-steps", "20", "--resume"])
    again = _log(resumed)
    assert [int(r["step"]) for r in again] == list(range(1, 21))
    for a, b in zip(rows[10:], again[10:], strict=True):
        assert (a["uncond_img"], a["uncond_audio"]) == (b["uncond_img"], b["uncond_audio"])
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-5, abs=1e-7)
    assert _state(resumed / "checkpoints" / "step-00000020")["weights_sha256"] == _state(ckpts["step-00000020"])["weights_sha256"]


@pytest.mark.parametrize("uncond", [(False, True), (True, False), (True, True)])
def test_keep_graph_gives_every_trainable_a_gradient_and_the_same_prediction(uncond):
    """A dropped branch multiplied by zero: same prediction as skipping it, but every trainable parameter
    (here also the reference UNet's, which only the reference branch uses) gets a gradient, not None."""
    import torch

    from singer_model.config import SingerConfig
    from singer_model.model import SingerNet
    from tests.singer_model.test_model import _inputs, _perturb

    torch.manual_seed(0)
    net = _perturb(SingerNet(SingerConfig.tiny(n_motion_frames=2))).train()
    net.freeze_backbone(("audioproj.", "msm.", "denoising_unet.sfm.", "audio_modules", "reference_unet.down_blocks."))
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    x = _inputs(net.cfg)
    img, audio = uncond
    preds = {}
    for keep in (False, True):
        net.zero_grad(set_to_none=True)
        pred = net(**x, uncond_img_fwd=img, uncond_audio_fwd=audio, keep_graph=keep)
        pred.pow(2).mean().backward()
        preds[keep] = pred.detach()
        grads = dict(net.named_parameters())
        missing = [n for n in trainable if grads[n].grad is None]
        if keep:
            assert not missing
        else:
            dropped = ("audioproj.", "msm.") if audio else ()
            dropped += ("reference_unet.",) if img else ()
            assert missing and all(n.startswith(dropped) for n in missing)
            assert any(n.startswith(dropped) for n in missing)
    torch.testing.assert_close(preds[True], preds[False], rtol=1e-5, atol=1e-6)
