"""Layout copies in one forward of the denoising UNet, counted on the meta device (no memory, no GPU).

    python perf/singer_layout_copies.py [--model singer|hallo|tiny] [--frames 16] [--size 512]
                                        [--batch 2] [--dtype bf16] [--motion-frames 2] [--by-module]

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen op of one ``DenoisingUNet3D``
forward as one CFG step runs it (``--batch 2``: the conditional and unconditional branch of one clip; reference
features from the reference UNet, audio tokens, masks, the FaceLocator feature of one mask per clip, all
computed before counting). Counted as layout copies: ``aten.clone`` (``.contiguous()`` and ``reshape`` of a
non-viewable tensor dispatch to it), ``aten.copy_`` and ``aten._to_copy`` when they keep the dtype (a cast is
not a layout change). ``aten.cat`` is listed apart, not counted: concatenations move data too, but the
skip connections and the motion frames need them in any layout. Attention runs through the fused kernel a
GPU would pick (:func:`singer_model.plan.gpu_attention_on_meta`), so the copies are those a GPU run makes.
Bytes are the outputs' sizes (each copy reads as many). Copies a kernel makes inside itself (e.g. a
LayerNorm given a strided input) are below the dispatcher and not seen, so the figure is a lower bound.
The figures are of the code as it is: record a "before" by running the script before a change.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from singer_model import plan as P  # noqa: E402
from singer_model.config import SingerConfig  # noqa: E402
from singer_model.model import SingerNet  # noqa: E402

log = logging.getLogger("perf.singer_layout_copies")

aten = torch.ops.aten
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODELS: dict[str, Callable[[], SingerConfig]] = {"singer": SingerConfig.full, "hallo": SingerConfig.hallo,
                                                  "tiny": SingerConfig.tiny}
COPY_OPS = {aten.clone.default: "clone", aten.copy_.default: "copy_", aten._to_copy.default: "_to_copy"}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class CopyStats:
    """Layout copies (``ops``/``bytes`` per op name), concatenations apart, and copies per owning module."""

    ops: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    cat_ops: int = 0
    cat_bytes: int = 0
    by_module: Counter = field(default_factory=Counter)  # innermost module class -> bytes copied

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


class CopyCounter(TorchDispatchMode):
    """Counts layout copies (see the module docstring) of everything run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = CopyStats()
        self.owner: list[str] = []  # stack of module class names, maintained by :func:`count_copies`

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = COPY_OPS.get(func)
        if name is not None and isinstance(out, torch.Tensor):
            src = args[1] if func is aten.copy_.default else args[0]
            if src.dtype == out.dtype:
                self.stats.ops[name] += 1
                self.stats.bytes[name] += _nbytes(out)
                self.stats.by_module[self.owner[-1] if self.owner else "-"] += _nbytes(out)
        elif func is aten.cat.default:
            self.stats.cat_ops += 1
            self.stats.cat_bytes += _nbytes(out)
        return out


@contextmanager
def _track_owners(module: nn.Module, counter: CopyCounter) -> Iterator[None]:
    def enter(mod: nn.Module, _args: Any) -> None:
        counter.owner.append(type(mod).__name__)

    def leave(_mod: nn.Module, _args: Any, _out: Any) -> None:
        counter.owner.pop()

    handles = []
    for mod in module.modules():
        handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def count_copies(fn: Callable[[], Any], module: nn.Module | None = None) -> CopyStats:
    """Run ``fn`` once and return its layout copies (attributed to ``module``'s submodules when given)."""
    counter = CopyCounter()
    with nullcontext() if module is None else _track_owners(module, counter), counter:
        fn()
    return counter.stats


def attention_for(device: torch.device) -> AbstractContextManager[None]:
    """On meta, attention through the kernels a GPU would pick; elsewhere the device's own."""
    return P.gpu_attention_on_meta() if device.type == "meta" else nullcontext()


def unet_inputs(net: SingerNet, frames: int, size: int, batch: int, motion_frames: int,
                dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Arguments of one denoising-UNet forward of a CFG step: reference features (reference image + motion
    frames per sample), ImageProj tokens, audio tokens, masks, one FaceLocator feature per clip."""
    cfg = net.cfg
    u = cfg.unet
    h = size // 8
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        if device.type == "meta":
            return torch.empty(*shape, device=device, dtype=dtype)
        return torch.randn(*shape, generator=g).to(device, dtype)

    with torch.no_grad(), attention_for(device):
        identity = net.imageproj(rand(batch, cfg.image_embed_dim))
        feats = net.reference_features(rand(batch * (1 + motion_frames), u.in_channels, h, h), identity)
        mask_fea = net.face_locator(rand(batch, cfg.face_locator_in_channels, size, size))
    return {
        "sample": rand(batch, u.in_channels, frames, h, h),
        "timestep": torch.full((batch,), 500, device=device),
        "encoder_hidden_states": identity,
        "audio_embedding": rand(batch, frames, cfg.audio_tokens, u.audio_attention_dim),
        "mask_cond_fea": mask_fea.expand(-1, -1, frames, -1, -1),
        "full_mask": rand(batch, frames, h, h),
        "face_mask": rand(batch, frames, h, h),
        "lip_mask": rand(batch, frames, h, h),
        "reference_features": feats,
    }


def measure(cfg: SingerConfig, *, frames: int, size: int, batch: int, motion_frames: int, dtype: torch.dtype,
            device: torch.device) -> CopyStats:
    """Layout copies of one no-grad denoising-UNet forward."""
    with device:
        net = SingerNet(cfg)
    net = net.to(dtype).eval()
    args = unet_inputs(net, frames, size, batch, motion_frames, dtype, device)
    unet = net.denoising_unet

    def forward() -> None:
        with torch.no_grad(), attention_for(device):
            unet(**args)

    return count_copies(forward, unet)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="singer")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512, help="pixels (latents are size / 8)")
    p.add_argument("--batch", type=int, default=2, help="2 = one CFG step of one clip")
    p.add_argument("--motion-frames", type=int, default=None, help="default: the config's (2)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="meta")
    p.add_argument("--by-module", action="store_true", help="also list the bytes copied per module class")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = MODELS[args.model]()
    motion = cfg.n_motion_frames if args.motion_frames is None else args.motion_frames
    stats = measure(cfg, frames=args.frames, size=args.size, batch=args.batch, motion_frames=motion,
                    dtype=DTYPES[args.dtype], device=torch.device(args.device))
    log.info("denoising UNet forward, %s, %d frames, %dx%d latents, batch %d, %s, %d motion frames",
             args.model, args.frames, args.size // 8, args.size // 8, args.batch, args.dtype, motion)
    log.info("%-24s %6s %16s %10s", "op", "ops", "bytes", "GB")
    rows = [(name, stats.ops[name], stats.bytes[name]) for name in sorted(stats.ops)]
    rows += [("layout copies (total)", stats.total_ops, stats.total_bytes),
             ("cat (not counted)", stats.cat_ops, stats.cat_bytes)]
    for name, ops, nbytes in rows:
        log.info("%-24s %6d %16d %10.3f", name, ops, nbytes, nbytes / 1e9)
    if args.by_module:
        log.info("layout copies by the innermost module running them:")
        for owner, nbytes in stats.by_module.most_common():
            log.info("  %-22s %23d %10.3f", owner, nbytes, nbytes / 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
