"""perf/singer_gpu.py at tiny size on CPU: the figures it reports are consistent with the plan it names."""

from __future__ import annotations

import json
import math

import pytest
import torch

from singer_model import plan as P
from singer_model.config import SingerConfig

from .conftest import perf_script


@pytest.fixture(scope="module")
def perf():
    yield from perf_script("singer_gpu")


def test_tiny_cpu_run_reports_step_time_memory_and_tflops_against_the_plan(perf, tmp_path):
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--dtype", "fp32", "--model", "tiny", "--size", "64", "--frames", "4",
            "--checkpointing", "off", "--repeats", "1", "--warmup", "0", "--clips", "2", "--steps", "40",
            "--peak-tflops", "1.0", "--json", str(out)]
    assert perf.main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and rep["dtype"] == "fp32" and rep["trainable"] == list(P.shipped_trainable())
    train, cfg_step = rep["results"]
    assert train["name"].startswith("training step") and cfg_step["name"].startswith("CFG denoising step (batch 4")
    plan = P.make_plan(SingerConfig.tiny(), frames=4, size=64, include_encoders=False, dtype=torch.float32)
    assert train["plan_flops"] == plan.step_flops > 0
    assert train["plan_memory_bytes"] == plan.memory.total
    for r in (train, cfg_step):
        assert r["seconds"] > 0 and r["seconds"] == sorted(r["seconds_all"])[len(r["seconds_all"]) // 2]
        assert r["tflops"] == pytest.approx(r["plan_flops"] / r["seconds"] / 1e12)
        assert r["peak_share"] == pytest.approx(r["tflops"] / 1.0)
        assert r["peak_memory_bytes"] is None and "not measured" in r["note"]  # CPU: no allocator peak
    # one CFG forward of 2 clips x (cond, uncond) counts the FLOPs of 4 samples of the denoising UNet
    one = perf.cfg_step_flops(SingerConfig.tiny(), 4, 64, 1, torch.float32)
    assert cfg_step["plan_flops"] == pytest.approx(2 * one, rel=0.02)
    windows = math.ceil(50 / 4)
    assert rep["windows_per_2s_clip"] == windows
    assert rep["seconds_per_2s_clip"] == pytest.approx(40 * windows * cfg_step["seconds"] / 2)
    assert "TFLOP/s" in perf.format_report(rep)


def test_cfg_step_inputs_are_the_pipelines_batched_cfg(perf):
    torch.manual_seed(0)
    net = perf._net(SingerConfig.tiny(), torch.device("cpu"), torch.float32).eval()
    args = perf.cfg_step_inputs(net, 4, 64, 2, torch.device("cpu"), torch.float32)
    assert args["noisy_latents"].shape[0] == 4
    assert args["face_emb"][2:].abs().sum() == 0 and args["face_emb"][:2].abs().sum() > 0
    assert args["audio_tokens"][2:].abs().sum() == 0 and args["mask_features"][2:].abs().sum() == 0
    with torch.no_grad():
        both = net(**args)
        cond = net(**{k: (v[:2] if isinstance(v, torch.Tensor) else v) for k, v in args.items()
                      if k != "reference_features"},
                   reference_features={k: v[: v.shape[0] // 2] for k, v in args["reference_features"].items()})
    assert torch.allclose(both[:2], cond, atol=1e-5)


def test_compiled_cfg_step(perf, tmp_path):
    """``--compile BACKEND`` times the compiled denoising step (``eager`` here: dynamo's capture without
    code generation, which on CPU would take minutes)."""
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--dtype", "fp32", "--model", "tiny", "--size", "64", "--frames", "4", "--no-train",
            "--repeats", "1", "--warmup", "1", "--compile", "eager", "--json", str(out)]
    assert perf.main(argv) == 0
    (step,) = json.loads(out.read_text())["results"]
    assert step["name"].endswith("torch.compile eager)") and step["seconds"] > 0
