"""SINGER speed on one device: a training step and one CFG denoising step, against the compute plan.

    python perf/singer_gpu.py [--device cuda] [--dtype bf16] [--model singer|hallo|tiny] [--size 512]
                              [--frames 16] [--batch 1] [--clips 1] [--checkpointing off|on|both]
                              [--trainable config|stage2] [--repeats 5] [--warmup 2] [--steps 40]
                              [--peak-tflops 790] [--json OUT.json]

Random weights (the speed does not depend on them). Measured:

1. **training step** (``--batch`` samples): forward of the whole net as ``shv-train`` runs it (reference UNet
   on the reference + motion latents, denoising UNet), MSE loss, backward, Adam on the trainable set
   (``--trainable``: the shipped config's, as :func:`singer_model.plan.shipped_trainable`). Gradient
   checkpointing off, on, or both.
2. **one CFG denoising step** as :meth:`singer_model.infer.SingerPipeline.generate_batch` runs it: the
   conditional and unconditional branches of ``--clips`` clips in ONE forward (batch ``2 x clips``), with the
   reference features, the FaceLocator feature and the audio tokens precomputed once per window.

For each: the median seconds over ``--repeats`` timed runs after ``--warmup`` untimed ones, the peak memory
the device's allocator reports (``torch.cuda.max_memory_allocated``; not measured on CPU, reported as None),
the FLOPs the plan counts for it (:mod:`singer_model.plan`, measured on the meta device: the same shapes) and
the TFLOP/s they give at the measured time, as a share of ``--peak-tflops`` when given (790 = what plain bf16
matrix products reach on an H200). The plan's memory estimate is printed beside the measured peak. From the
CFG step: seconds per 2-s clip at ``--steps`` DDIM steps (50 frames = ceil(50 / frames) windows), the
issue's target being at most 15 s on an H200-class GPU; training: the share of the peak, target >= 35 %.

Runs at tiny size on CPU in ``tests/singer_model/test_singer_gpu_perf.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singer_model import plan as P  # noqa: E402
from singer_model.config import SingerConfig  # noqa: E402
from singer_model.model import SingerNet  # noqa: E402

log = logging.getLogger("perf.singer_gpu")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODELS: dict[str, Callable[[], SingerConfig]] = {"singer": SingerConfig.full, "hallo": SingerConfig.hallo,
                                                  "tiny": SingerConfig.tiny}
CLIP_FRAMES = 50  # a 2-s clip at 25 fps


@dataclass
class Measured:
    """One measured kind of step."""

    name: str
    seconds: float  #: median over the timed repeats
    seconds_all: list[float]
    peak_memory_bytes: int | None  #: the allocator's peak (None: not measured on this device)
    plan_flops: int  #: what singer_model.plan counts for this step
    tflops: float  #: plan_flops / seconds / 1e12
    peak_share: float | None  #: tflops / --peak-tflops
    plan_memory_bytes: int | None = None  #: the plan's estimate (training: weights + Adam + activations)
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def time_it(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def step_inputs(cfg: SingerConfig, frames: int, size: int, batch: int, device: torch.device,
                dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of a training step (the shapes of :func:`singer_model.plan._step_inputs`)."""
    g = torch.Generator("cpu").manual_seed(seed)
    meta = P._step_inputs(cfg, frames, size, batch, cfg.n_motion_frames, dtype)
    out = {}
    for k, v in meta.items():
        if k == "timesteps":
            out[k] = torch.randint(0, 1000, v.shape, generator=g).to(device)
        elif k.endswith("mask"):
            out[k] = torch.rand(v.shape, generator=g).to(device, dtype)
        else:
            out[k] = torch.randn(v.shape, generator=g).to(device, dtype)
    return out


def _net(cfg: SingerConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> SingerNet:
    torch.manual_seed(seed)
    with device:  # initialised on the device: a full-size net is 2.4 B parameters
        net = SingerNet(replace(cfg, gradient_checkpointing=False))
    return net.to(dtype=dtype)


def measure_training(cfg: SingerConfig, *, frames: int, size: int, batch: int, device: torch.device,
                     dtype: torch.dtype, checkpointing: bool, trainable: tuple[str, ...] | None,
                     repeats: int, warmup: int, peak_tflops: float | None) -> Measured:
    net = _net(cfg, device, dtype)
    net.train()
    params = [net.get_parameter(n) for n in net.freeze_backbone(P.shipped_trainable() if trainable is None
                                                                 else trainable)]
    net.set_gradient_checkpointing(checkpointing)
    opt = torch.optim.Adam(params, lr=1e-5)
    inputs = step_inputs(cfg, frames, size, batch, device, dtype)
    target = torch.randn(inputs["noisy_latents"].shape, generator=torch.Generator("cpu").manual_seed(1)).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(net(**inputs).float(), target)
        loss.backward()
        opt.step()

    _reset_peak(device)
    times = time_it(step, device, repeats, warmup)
    peak = _peak(device)
    plan = P.make_plan(cfg, frames=frames, size=size, batch=batch, gradient_checkpointing=checkpointing,
                       dtype=dtype, include_encoders=False, trainable=trainable)
    sec = statistics.median(times)
    tf = plan.step_flops / sec / 1e12
    return Measured(f"training step (checkpointing {'on' if checkpointing else 'off'})", sec, times, peak,
                    plan.step_flops, tf, tf / peak_tflops if peak_tflops else None, plan.memory.total,
                    "" if peak is not None else "peak memory not measured on this device")


def cfg_step_inputs(net: SingerNet, frames: int, size: int, clips: int, device: torch.device,
                    dtype: torch.dtype) -> dict[str, Any]:
    """The arguments of one batched-CFG forward as ``generate_batch`` builds them (reference features,
    FaceLocator feature and audio tokens computed once per window, as there)."""
    cfg = net.cfg
    x = step_inputs(cfg, frames, size, clips, device, dtype)
    region = x["face_region_mask"][:, :, 0]  # one mask per clip: [C, 3, H, W]
    face_emb = x["face_emb"]
    zero = torch.zeros_like(face_emb)
    with torch.no_grad():
        feats = net.reference_features(x["ref_latents"], net.imageproj(face_emb))
        unc = net.reference_features(x["ref_latents"], net.imageproj(zero))
        mask_fea = net.face_locator(region)
        tokens = net.encode_audio(x["audio_features"], x["noisy_latents"] if net.msm is not None else None)
    args = {
        "noisy_latents": torch.cat([x["noisy_latents"]] * 2),
        "timesteps": torch.cat([x["timesteps"]] * 2),
        "ref_latents": None,
        "face_emb": torch.cat([face_emb, zero]),
        "audio_features": torch.cat([x["audio_features"]] * 2),
        "face_region_mask": None,
        "full_mask": torch.cat([x["full_mask"]] * 2),
        "face_mask": torch.cat([x["face_mask"]] * 2),
        "lip_mask": torch.cat([x["lip_mask"]] * 2),
        "audio_tokens": torch.cat([tokens, torch.zeros_like(tokens)]),
        "reference_features": {k: torch.cat([v, unc[k]]) for k, v in feats.items()},
        "mask_features": torch.cat([mask_fea, torch.zeros_like(mask_fea)]),
    }
    return args


def cfg_step_flops(cfg: SingerConfig, frames: int, size: int, clips: int, dtype: torch.dtype) -> int:
    """FLOPs of one batched-CFG forward (batch 2 x clips), counted on the meta device as the plan counts."""
    with torch.device("meta"):
        net = SingerNet(replace(cfg, gradient_checkpointing=False))
    net = net.to(dtype).eval()
    with P.gpu_attention_on_meta():
        args = cfg_step_inputs(net, frames, size, clips, torch.device("meta"), dtype)
    return P.count_forward_flops(lambda: net(**args))


def measure_cfg_step(cfg: SingerConfig, *, frames: int, size: int, clips: int, device: torch.device,
                     dtype: torch.dtype, repeats: int, warmup: int, peak_tflops: float | None,
                     steps: int, compile_backend: str | None = None) -> tuple[Measured, float]:
    net = _net(cfg, device, dtype).eval().requires_grad_(False)
    args = cfg_step_inputs(net, frames, size, clips, device, dtype)
    forward = net if compile_backend is None else torch.compile(net, backend=compile_backend)  # as SingerPipeline

    @torch.no_grad()
    def step() -> None:
        forward(**args)

    _reset_peak(device)
    times = time_it(step, device, repeats, warmup)
    peak = _peak(device)
    flops = cfg_step_flops(cfg, frames, size, clips, dtype)
    sec = statistics.median(times)
    tf = flops / sec / 1e12
    windows = math.ceil(CLIP_FRAMES / frames)
    per_clip = steps * windows * sec / clips
    compiled = f", torch.compile {compile_backend}" if compile_backend else ""
    return (Measured(f"CFG denoising step (batch {2 * clips}: {clips} clip(s) x cond/uncond{compiled})", sec, times, peak,
                     flops, tf, tf / peak_tflops if peak_tflops else None, None,
                     "" if peak is not None else "peak memory not measured on this device"), per_clip)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    cfg = MODELS[args.model]()
    trainable = {"config": None, "stage2": P.STAGE2_TRAINABLE}[args.trainable]
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.checkpointing]
    results = []
    if not args.no_train:
        for ckpt in modes:
            results.append(measure_training(cfg, frames=args.frames, size=args.size, batch=args.batch,
                                            device=device, dtype=dtype, checkpointing=ckpt, trainable=trainable,
                                            repeats=args.repeats, warmup=args.warmup,
                                            peak_tflops=args.peak_tflops))
            log.info("%s: %.3f s", results[-1].name, results[-1].seconds)
    cfg_m, per_clip = measure_cfg_step(cfg, frames=args.frames, size=args.size, clips=args.clips, device=device,
                                       dtype=dtype, repeats=args.repeats, warmup=args.warmup,
                                       peak_tflops=args.peak_tflops, steps=args.steps,
                                       compile_backend=args.compile)
    results.append(cfg_m)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "model": args.model, "size": args.size, "frames": args.frames, "batch": args.batch,
        "clips": args.clips, "trainable": list(trainable or P.shipped_trainable()), "torch": torch.__version__,
        "peak_tflops": args.peak_tflops,
        "results": [asdict(r) for r in results],
        "seconds_per_2s_clip": per_clip, "ddim_steps": args.steps,
        "windows_per_2s_clip": math.ceil(CLIP_FRAMES / args.frames),
    }


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"SINGER speed: {rep['model']} {rep['frames']} frames at {rep['size']}x{rep['size']}, {rep['dtype']} "
             f"on {rep['device_name']} (torch {rep['torch']}), trainable {', '.join(rep['trainable'])}", ""]
    for r in rep["results"]:
        peak = "not measured" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 1e9:.2f} GB"
        plan_mem = "" if r["plan_memory_bytes"] is None else f" (plan: {r['plan_memory_bytes'] / 1e9:.2f} GB)"
        share = "" if r["peak_share"] is None else f", {r['peak_share']:.0%} of {rep['peak_tflops']:g}"
        lines.append(f"  {r['name']}: {r['seconds']:.4f} s, peak {peak}{plan_mem}, plan {r['plan_flops'] / 1e12:.3f} "
                     f"TFLOP -> {r['tflops']:.3f} TFLOP/s{share}")
    lines.append(f"  per 2-s clip at {rep['ddim_steps']} DDIM steps ({rep['windows_per_2s_clip']} windows): "
                 f"{rep['seconds_per_2s_clip']:.2f} s of denoising")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--model", choices=sorted(MODELS), default="singer")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=1, help="training samples per step")
    p.add_argument("--clips", type=int, default=1, help="clips per CFG forward (batch = 2 x clips)")
    p.add_argument("--checkpointing", choices=("off", "on", "both"), default="both")
    p.add_argument("--trainable", choices=("config", "stage2"), default="config")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="DDIM steps for the per-clip figure")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's reachable TFLOP/s for the share (H200 bf16 matmul: 790)")
    p.add_argument("--no-train", action="store_true", help="only the CFG denoising step")
    p.add_argument("--compile", metavar="BACKEND", default=None,
                   help="torch.compile the denoising step with this backend (inductor, as shv-bench --compile); "
                        "the warm-up runs pay the compile")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.clips < 1 or args.batch < 1:
        parser().error("--repeats, --clips, --batch >= 1 and --warmup >= 0")
    rep = run(args)
    log.info("%s", format_report(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
