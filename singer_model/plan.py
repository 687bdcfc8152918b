"""Compute plan of SINGER training: parameters, FLOPs per step, activation memory, GPU-hours.

Everything is *measured* on PyTorch's meta device (tensors with shapes and dtypes but no data, so the
full-size model costs no memory and a training step runs in seconds on a CPU):

* **Parameters**: per component of :class:`singer_model.model.SingerNet` (reference UNet, denoising UNet
  split into its 2D SD-1.5 part, motion modules, audio modules and SFM; MSM; AudioProj; ImageProj;
  FaceLocator), trainable as the shipped training config selects them (``train.trainable`` of
  ``singer_model/configs/singer_full.yaml``, :class:`singer_model.train.TrainSection`'s default: AudioProj, MSM,
  SFM, as the paper trains; ``trainable=STAGE2_TRAINABLE`` / ``--trainable stage2`` adds Hallo stage 2's audio
  and motion modules), plus
  the frozen encoders: the SD VAE (``diffusers.AutoencoderKL`` built from sd-vae-ft-mse's config) and
  wav2vec2-base (``transformers.Wav2Vec2Model`` with wav2vec2-base-960h's sizes).
* **FLOPs per training step** (one sample per GPU): :class:`torch.utils.flop_counter.FlopCounterMode`
  around one forward of the whole net as it trains (frozen backbone, reference UNet forward on the
  reference image + motion-frame latents without a graph, denoising UNet with the trainable modules
  inside it) and the backward of an MSE loss. The backward runs through the frozen layers (input
  gradients only: the counter sees exactly the matmuls autograd executes); with gradient checkpointing
  it includes the recomputed forward of every checkpointed block. Attention is counted as the GPU runs
  it: on meta, ``scaled_dot_product_attention`` would fall back to its math decomposition (which
  materialises the attention matrix), so during the measurement it is routed to the flash-attention
  kernel (memory-efficient kernel for fp32 or masked attention), whose meta kernels and FLOP formulas
  PyTorch ships (the flash backward is counted at 2.5x its forward, as PyTorch's counter does).
* **VAE**: this project's trainer (:mod:`singer_model.data`) caches the VAE latents and wav2vec2 features
  once per clip, so neither runs in a training step; Hallo's trainer encodes the frames, the reference
  image and the motion frames with the VAE online. Both are reported: ``vae_encode`` is the extra FLOPs
  per step if done online (``online_vae=True`` adds it to the step and the VAE weights to memory).
* **Activation memory**, two measurements: (1) ``saved``: every tensor autograd saves for the backward,
  recorded with :func:`torch.autograd.graph.saved_tensors_hooks` and summed once per storage (parameters
  excluded); with non-reentrant checkpointing the checkpoint's own hooks take over inside the blocks, so
  only what is saved outside them is seen. (2) ``peak``: a dispatch mode follows the storage of every
  tensor any operator creates during forward and backward (freed when its last reference dies, via weak
  references) and records the maximum live total; this includes the block inputs a checkpoint keeps,
  the recomputed block during the backward, activation gradients and temporaries, but not parameters,
  parameter gradients (counted in the optimiser memory) nor the batch inputs (listed separately).
  Memory of the allocator (fragmentation, caching) and of the CUDA context is not included. FLOPs and
  memory come from two separate runs of the step: FlopCounterMode's module tracking keeps the graphs of
  checkpoint recomputations alive until it exits, which would inflate memory measured under it.
* **Memory per GPU**: frozen weights at the compute dtype, trainable weights as a compute-dtype copy plus
  fp32 master weights, fp32 gradients and Adam's two fp32 moments (16 B/param), plus the peak above.
  Activations are measured with all compute in the given dtype (bf16): under ``torch.autocast`` the
  outputs of normalisation layers are fp32, somewhat more.
* **GPU time**: ``step seconds = FLOPs per GPU-step / (peak FLOP/s x utilisation)``; data parallel over
  ``gpus`` GPUs with ``batch`` samples each, so one optimiser step processes ``gpus x batch`` samples
  (the paper: 17,000 steps, batch 1 per GPU, 4 GPUs -> 68,000 samples); ``GPU-hours = steps x step
  seconds x gpus / 3600``. The utilisation is applied to the executed FLOPs (recompute included).

``main(argv)`` prints the table (``--json`` for JSON); ``shv-train --plan ...`` calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from singer_model.config import SHIPPED_TRAINABLE, SingerConfig
from singer_model.model import SingerNet

log = logging.getLogger(__name__)

GB = 1e9
GIB = 2**30
#: bytes per trainable parameter held by the optimiser side: fp32 master weight, fp32 gradient, Adam m and v
TRAINABLE_STATE_BYTES = 16
#: the paper's schedule
PAPER_STEPS = 17_000
PAPER_GPUS = 4

#: wav2vec2-base-960h (facebook), the audio encoder of Hallo/SINGER: sizes of its config.json
WAV2VEC2_BASE_960H: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "mask_time_prob": 0.05,
}


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_tflops: float  #: dense bf16 tensor-core peak, TFLOP/s
    memory_gb: float


A100 = Hardware("A100 80GB SXM", 312.0, 80.0)
H100 = Hardware("H100 80GB SXM", 989.0, 80.0)


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ComponentParams:
    name: str
    params: int
    trainable: int
    #: "network" (SingerNet), "encoder" (frozen VAE / wav2vec2)
    kind: str
    #: its weights are on the GPU during a training step
    resident: bool


@dataclass(frozen=True)
class Measurement:
    """One measured forward + backward (FLOPs and bytes)."""

    forward_flops: int
    backward_flops: int
    saved_bytes: int  #: autograd-saved tensors (outside checkpointed blocks), once per storage
    retained_bytes: int  #: live at the end of the forward (what the backward needs)
    peak_bytes: int  #: live maximum over forward + backward
    #: forward FLOPs by operator (aten op name -> FLOPs)
    forward_by_op: dict[str, int] = field(default_factory=dict)
    backward_by_op: dict[str, int] = field(default_factory=dict)

    @property
    def total_flops(self) -> int:
        return self.forward_flops + self.backward_flops


@dataclass(frozen=True)
class GpuEstimate:
    hardware: str
    peak_tflops: float
    utilisation: float
    step_seconds: float
    wall_hours: float
    gpu_hours: float


@dataclass(frozen=True)
class MemoryEstimate:
    frozen_weights: int  #: bytes, compute dtype
    trainable_weights_compute: int  #: compute-dtype copy of the trainable weights (0 in fp32)
    trainable_state: int  #: fp32 master + fp32 grads + Adam m, v
    activations_peak: int
    inputs: int
    budget_gb: float

    @property
    def total(self) -> int:
        return (self.frozen_weights + self.trainable_weights_compute + self.trainable_state
                + self.activations_peak + self.inputs)

    @property
    def fits(self) -> bool:
        return self.total <= self.budget_gb * GB


@dataclass(frozen=True)
class Plan:
    model: str
    frames: int
    size: int
    latent_size: int
    batch: int
    motion_frames: int
    dtype: str
    gradient_checkpointing: bool
    online_vae: bool
    components: list[ComponentParams]
    params_network: int
    params_trainable: int
    params_encoders: int
    step: Measurement
    reference_forward_flops: int
    vae_encode_flops: int  #: per step if the VAE encoded the frames online (not included unless online_vae)
    wav2vec2_flops: int  #: per sample's audio window, offline (cached), for information
    step_flops: int  #: per GPU per optimiser step (incl. the VAE only if online_vae)
    steps: int
    gpus: int
    samples_per_step: int
    memory: MemoryEstimate
    gpu: list[GpuEstimate]
    measure_seconds: float
    trainable: tuple[str, ...] = ()  #: the train.trainable entries the plan froze the net by

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"]["total"] = self.memory.total
        d["memory"]["fits"] = self.memory.fits
        d["step"]["total_flops"] = self.step.total_flops
        return d


# ---------------------------------------------------------------------------------------------- attention
def _sdpa_as_on_gpu(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` through the fused kernel a GPU would pick (flash for half
    precision without mask, else memory-efficient), so meta runs save what the GPU saves."""
    if enable_gqa:
        raise ValueError("grouped-query attention is not used by SINGER")
    half = query.dtype in (torch.float16, torch.bfloat16)
    if attn_mask is None and half and query.shape[-1] <= 256:
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, dropout_p, is_causal, False, scale=scale)
        return out[0]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    bias = attn_mask
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, needs_grad, dropout_p, is_causal, scale=scale)
    return out[0]


@contextlib.contextmanager
def gpu_attention_on_meta() -> Iterator[None]:
    """Temporarily route ``torch.nn.functional.scaled_dot_product_attention`` to the fused kernels."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _sdpa_as_on_gpu  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------- memory tracking
class _LiveStorageTracker(TorchDispatchMode):
    """Sum of the bytes of every storage created by an operator while alive; maximum over time."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        nbytes = self.live.pop(key, None)
        if nbytes is not None:
            self.current -= nbytes

    def forget(self, t: torch.Tensor) -> None:
        """Stop counting ``t``'s storage (e.g. a parameter gradient, counted elsewhere)."""
        key = t.untyped_storage()._cdata
        self.exclude.add(key)
        self._free(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.live or key in self.exclude:
                    continue
                nbytes = storage.nbytes()
                self.live[key] = nbytes
                self.current += nbytes
                weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)
        return out


def _storage_keys(tensors: Iterator[torch.Tensor]) -> set[int]:
    return {t.untyped_storage()._cdata for t in tensors}


def _op_counts(counter: FlopCounterMode) -> dict[str, int]:
    return {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}


def measure(module: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Measurement:
    """FLOPs and activation bytes of ``loss_fn()`` (forward) and its ``backward()``.

    ``module`` owns the parameters (their storages and gradients are not counted as activations).
    Runs on whatever device the tensors are on; on meta it costs no memory.
    """
    param_keys = _storage_keys(iter([*module.parameters(), *module.buffers()]))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in param_keys:
            saved[storage._cdata] = storage.nbytes()
        return t

    # Pass 1, FLOPs. Pass 2, memory: FlopCounterMode's module tracking keeps the graphs of checkpoint
    # recomputations alive during the backward, which would inflate the memory measured under it.
    with gpu_attention_on_meta():
        with FlopCounterMode(display=False) as fwd_counter:
            loss = loss_fn()
        with FlopCounterMode(display=False) as bwd_counter:
            loss.backward()
        del loss
        module.zero_grad(set_to_none=True)
        tracker = _LiveStorageTracker(set(param_keys))
        handles = [p.register_post_accumulate_grad_hook(lambda p: tracker.forget(p.grad))
                   for p in module.parameters() if p.requires_grad]
        try:
            with tracker:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = loss_fn()
                retained = tracker.current
                loss.backward()
                del loss
        finally:
            for h in handles:
                h.remove()
            module.zero_grad(set_to_none=True)
    return Measurement(
        forward_flops=int(fwd_counter.get_total_flops()), backward_flops=int(bwd_counter.get_total_flops()),
        saved_bytes=sum(saved.values()), retained_bytes=retained, peak_bytes=tracker.peak,
        forward_by_op=_op_counts(fwd_counter), backward_by_op=_op_counts(bwd_counter))


def count_forward_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` without gradients (fused attention as on a GPU)."""
    with gpu_attention_on_meta(), torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------- components
NETWORK_COMPONENTS = ("reference_unet", "denoising_unet", "motion_modules", "audio_modules", "sfm", "msm",
                      "audioproj", "imageproj", "face_locator")


def component_of(name: str) -> str:
    """Component of a SingerNet parameter name (the denoising UNet split into 2D part and its modules)."""
    if name.startswith("denoising_unet.sfm."):
        return "sfm"
    if name.startswith("denoising_unet."):
        if ".motion_modules." in name:
            return "motion_modules"
        if ".audio_modules." in name:
            return "audio_modules"
        return "denoising_unet"
    return name.split(".", 1)[0]


def network_components(net: SingerNet) -> list[ComponentParams]:
    totals: dict[str, list[int]] = {c: [0, 0] for c in NETWORK_COMPONENTS}
    for name, p in net.named_parameters():
        entry = totals.setdefault(component_of(name), [0, 0])
        entry[0] += p.numel()
        if p.requires_grad:
            entry[1] += p.numel()
    return [ComponentParams(n, t, tr, "network", True) for n, (t, tr) in totals.items() if t]


def shipped_trainable() -> tuple[str, ...]:
    """What the shipped training config trains (``TrainSection.trainable``, = singer_full.yaml's)."""
    return SHIPPED_TRAINABLE


def build_training_net(cfg: SingerConfig, dtype: torch.dtype = torch.bfloat16,
                       gradient_checkpointing: bool = False,
                       trainable: tuple[str, ...] | None = None) -> SingerNet:
    """SingerNet on meta, in training mode, frozen as ``shv-train`` freezes it (``trainable`` entries as
    ``train.trainable``; default: :func:`shipped_trainable`)."""
    with torch.device("meta"):
        net = SingerNet(cfg)
    net = net.to(dtype)
    net.train()
    net.freeze_backbone(shipped_trainable() if trainable is None else tuple(trainable))
    net.set_gradient_checkpointing(gradient_checkpointing)
    return net


def count_parameters(cfg: SingerConfig, trainable: tuple[str, ...] | None = None) -> list[ComponentParams]:
    """Per-component parameter counts of the network (no forward; built on meta)."""
    return network_components(build_training_net(cfg, trainable=trainable))


def build_vae_meta(dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The SD VAE (sd-vae-ft-mse layout, :data:`singer_model.checkpoints.SD_VAE_CONFIG`) on meta."""
    from diffusers import AutoencoderKL

    from singer_model.checkpoints import SD_VAE_CONFIG

    accepted = inspect.signature(AutoencoderKL.__init__).parameters
    with torch.device("meta"):
        vae = AutoencoderKL(**{k: v for k, v in SD_VAE_CONFIG.items() if k in accepted})
    return nn.Module.to(vae, dtype).eval().requires_grad_(False)  # ModelMixin.to warns about fp32 modules


def build_wav2vec2_meta(dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """wav2vec2-base (base-960h sizes) as ``transformers.Wav2Vec2Model`` on meta."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config(**WAV2VEC2_BASE_960H))
    return model.to(dtype).eval().requires_grad_(False)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------- the plan
def _step_inputs(cfg: SingerConfig, frames: int, size: int, batch: int, motion_frames: int,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    u = cfg.unet
    h = size // 8
    kw = {"device": "meta", "dtype": dtype}
    return {
        "noisy_latents": torch.empty(batch, u.in_channels, frames, h, h, **kw),
        "timesteps": torch.zeros(batch, dtype=torch.long, device="meta"),
        "ref_latents": torch.empty(batch * (1 + motion_frames), u.in_channels, h, h, **kw),
        "face_emb": torch.empty(batch, cfg.image_embed_dim, **kw),
        "audio_features": torch.empty(batch, frames, cfg.audio_window, cfg.audio_layers, cfg.audio_feature_dim,
                                      **kw),
        "face_region_mask": torch.empty(batch, cfg.face_locator_in_channels, frames, size, size, **kw),
        "full_mask": torch.empty(batch, frames, h, h, **kw),
        "face_mask": torch.empty(batch, frames, h, h, **kw),
        "lip_mask": torch.empty(batch, frames, h, h, **kw),
    }


def _model_name(cfg: SingerConfig) -> str:
    if cfg.use_msm and cfg.use_sfm:
        return "SINGER"
    if not cfg.use_msm and not cfg.use_sfm:
        return "Hallo"
    return "SINGER w/o " + ("MSM" if not cfg.use_msm else "SFM")


def make_plan(
    cfg: SingerConfig | None = None,
    frames: int = 16,
    size: int = 512,
    batch: int = 1,
    gradient_checkpointing: bool = False,
    motion_frames: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    steps: int = PAPER_STEPS,
    gpus: int = PAPER_GPUS,
    utilisation: float = 0.40,
    hardware: tuple[Hardware, ...] = (A100, H100),
    online_vae: bool = False,
    include_encoders: bool = True,
    trainable: tuple[str, ...] | None = None,
) -> Plan:
    """Measure a training step of ``cfg`` on the meta device and derive memory and GPU-hours.

    ``frames`` frames of ``size`` px (latents ``size/8``), ``batch`` samples per GPU, ``motion_frames``
    (default ``cfg.n_motion_frames``, Hallo: 2) previous frames through the reference UNet.
    ``include_encoders`` builds the VAE and wav2vec2 (parameters, VAE encode and wav2vec2 FLOPs).
    ``trainable``: parameter-name entries as ``train.trainable`` (default: what the shipped config trains,
    :func:`shipped_trainable`; :data:`STAGE2_TRAINABLE`: Hallo stage 2 plus MSM and SFM).
    """
    cfg = cfg or SingerConfig.full()
    if size % 8:
        raise ValueError(f"size must be a multiple of 8, got {size}")
    if frames + (motion_frames if motion_frames is not None else cfg.n_motion_frames) > cfg.unet.motion_pe_max_len:
        raise ValueError(f"frames + motion frames exceed the motion modules' position table "
                         f"({cfg.unet.motion_pe_max_len})")
    m = cfg.n_motion_frames if motion_frames is None else motion_frames
    t0 = time.perf_counter()
    net = build_training_net(cfg, dtype, gradient_checkpointing, trainable)
    components = network_components(net)
    params_network = sum(c.params for c in components)
    params_trainable = sum(c.trainable for c in components)

    inputs = _step_inputs(cfg, frames, size, batch, m, dtype)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs.values())

    def loss_fn() -> torch.Tensor:
        pred = net(**inputs)
        return F.mse_loss(pred.float(), torch.empty(pred.shape, device="meta"))

    step = measure(net, loss_fn)
    identity = torch.empty(batch, cfg.image_tokens, cfg.unet.cross_attention_dim, device="meta", dtype=dtype)
    reference_flops = count_forward_flops(lambda: net.reference_features(inputs["ref_latents"], identity))

    vae_flops = 0
    w2v_flops = 0
    params_encoders = 0
    vae_params = 0
    if include_encoders:
        vae = build_vae_meta(dtype)
        w2v = build_wav2vec2_meta(dtype)
        vae_params = _count(vae)
        w2v_params = _count(w2v)
        params_encoders = vae_params + w2v_params
        components += [ComponentParams("vae (sd-vae-ft-mse)", vae_params, 0, "encoder", online_vae),
                       ComponentParams("wav2vec2-base-960h", w2v_params, 0, "encoder", False)]
        images = torch.empty(batch * (frames + 1 + m), 3, size, size, device="meta", dtype=dtype)
        vae_flops = count_forward_flops(lambda: vae.encode(images))
        fps = 25.0
        samples = int(round(frames / fps * 16000))
        audio = torch.empty(batch, samples, device="meta", dtype=dtype)
        w2v_flops = count_forward_flops(lambda: w2v(audio, output_hidden_states=True))

    step_flops = step.total_flops + (vae_flops if online_vae else 0)
    el = torch.empty((), dtype=dtype).element_size()
    frozen = params_network - params_trainable + (vae_params if online_vae else 0)
    memory = MemoryEstimate(
        frozen_weights=frozen * el,
        trainable_weights_compute=params_trainable * el if dtype != torch.float32 else 0,
        trainable_state=params_trainable * TRAINABLE_STATE_BYTES,
        activations_peak=step.peak_bytes,
        inputs=input_bytes,
        budget_gb=min(h.memory_gb for h in hardware) if hardware else 80.0,
    )
    gpu = []
    for hw in hardware:
        sec = step_flops / (hw.peak_tflops * 1e12 * utilisation)
        gpu.append(GpuEstimate(hw.name, hw.peak_tflops, utilisation, sec, steps * sec / 3600,
                               steps * sec * gpus / 3600))
    return Plan(
        model=_model_name(cfg), frames=frames, size=size, latent_size=size // 8, batch=batch, motion_frames=m,
        dtype=str(dtype).removeprefix("torch."), gradient_checkpointing=gradient_checkpointing,
        online_vae=online_vae, components=components, params_network=params_network,
        params_trainable=params_trainable, params_encoders=params_encoders, step=step,
        reference_forward_flops=reference_flops, vae_encode_flops=vae_flops, wav2vec2_flops=w2v_flops,
        step_flops=step_flops, steps=steps, gpus=gpus, samples_per_step=gpus * batch, memory=memory, gpu=gpu,
        measure_seconds=time.perf_counter() - t0,
        trainable=shipped_trainable() if trainable is None else tuple(trainable),
    )


# ---------------------------------------------------------------------------------------------- output
def _m(n: int) -> str:
    return f"{n:,}"


def _tf(n: int | float) -> str:
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} FLOP"


def _gb(n: int) -> str:
    return f"{n / GB:,.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:,.2f} MB"


def format_plans(plans: list[Plan]) -> str:
    """Readable report of one or more plans of the same model and shape (e.g. with/without checkpointing)."""
    p0 = plans[0]
    lines = [
        f"{p0.model} training plan: {p0.frames} frames at {p0.size}x{p0.size} (latents {p0.latent_size}x"
        f"{p0.latent_size}), {p0.motion_frames} motion frames, batch {p0.batch} per GPU, {p0.dtype}, "
        f"measured on the meta device",
        f"trainable (train.trainable): {', '.join(p0.trainable)}",
        "",
        "Parameters                          total        trainable   on GPU in a step",
    ]
    labels = {"denoising_unet": "denoising_unet (2D)", "motion_modules": "  + motion_modules",
              "audio_modules": "  + audio_modules", "sfm": "  + SFM"}
    for c in p0.components:
        lines.append(f"  {labels.get(c.name, c.name):<22} {_m(c.params):>15} {_m(c.trainable):>15}   {'yes' if c.resident else 'no'}")
    lines += [
        f"  {'SingerNet total':<22} {_m(p0.params_network):>15} {_m(p0.params_trainable):>15}",
    ]
    if p0.params_encoders:
        lines += [
            f"  {'+ frozen encoders':<22} {_m(p0.params_encoders):>15}",
            f"  {'all':<22} {_m(p0.params_network + p0.params_encoders):>15}",
        ]
    lines += [
        "",
        f"Per training step and GPU (VAE latents and wav2vec2 features cached: not run per step"
        f"{'; VAE encode online: included' if p0.online_vae else ''})",
    ]
    header = f"  {'':<44}" + "".join(f"{'checkpointing ' + ('on' if p.gradient_checkpointing else 'off'):>22}"
                                     for p in plans)
    lines.append(header)

    def row(label: str, fn: Callable[[Plan], str]) -> None:
        lines.append(f"  {label:<44}" + "".join(f"{fn(p):>22}" for p in plans))

    row("reference UNet forward (in forward)", lambda p: _tf(p.reference_forward_flops))
    row("forward", lambda p: _tf(p.step.forward_flops))
    row("backward (incl. recompute)", lambda p: _tf(p.step.backward_flops))
    row("step total", lambda p: _tf(p.step_flops))
    if p0.params_encoders:
        row(f"VAE encode online ({p0.frames}+1+{p0.motion_frames} images, if done)",
            lambda p: _tf(p.vae_encode_flops))
        row("wav2vec2 on the sample's audio (offline)", lambda p: _tf(p.wav2vec2_flops))
    row("autograd-saved tensors", lambda p: _gb(p.step.saved_bytes))
    row("live activations at end of forward", lambda p: _gb(p.step.retained_bytes))
    row("peak activations (fwd+bwd)", lambda p: _gb(p.step.peak_bytes))
    lines += ["", "Memory per GPU (trainable: fp32 master + fp32 grads + Adam m, v = 16 B/param)"]
    row(f"frozen weights ({p0.dtype})", lambda p: _gb(p.memory.frozen_weights))
    row(f"trainable weights ({p0.dtype} compute copy)", lambda p: _gb(p.memory.trainable_weights_compute))
    row("trainable master + grads + Adam", lambda p: _gb(p.memory.trainable_state))
    row("peak activations", lambda p: _gb(p.memory.activations_peak))
    row("batch inputs", lambda p: _gb(p.memory.inputs))
    row("total", lambda p: _gb(p.memory.total))
    row(f"fits {p0.memory.budget_gb:.0f} GB", lambda p: "yes" if p.memory.fits else "NO")
    lines += ["", f"GPU time for {p0.steps:,} steps on {p0.gpus} GPUs (data parallel, batch {p0.batch} per GPU = "
              f"{p0.samples_per_step} samples per step, {p0.steps * p0.samples_per_step:,} samples)"]
    for i, g in enumerate(p0.gpu):
        row(f"{g.hardware} ({g.peak_tflops:.0f} TFLOP/s bf16, {g.utilisation:.0%} util.)", lambda p, i=i: "")
        row("  seconds per step", lambda p, i=i: f"{p.gpu[i].step_seconds:.2f} s")
        row("  wall-clock", lambda p, i=i: f"{p.gpu[i].wall_hours:,.1f} h")
        row("  GPU-hours", lambda p, i=i: f"{p.gpu[i].gpu_hours:,.1f} GPU-h")
    lines.append("")
    lines.append("measured in " + ", ".join(f"{p.measure_seconds:.1f} s" for p in plans))
    return "\n".join(lines)


def _dtype(name: str) -> torch.dtype:
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; one of {sorted(table)}")
    return table[name]


#: Hallo stage 2's trainables plus both SINGER modules (the plan's earlier default)
STAGE2_TRAINABLE: tuple[str, ...] = ("audioproj.", "audio_modules", "motion_modules", "msm.", "denoising_unet.sfm.")


def _trainable_arg(value: str) -> tuple[str, ...] | None:
    if value == "config":
        return None
    if value == "stage2":
        return STAGE2_TRAINABLE
    entries = tuple(v.strip() for v in value.split(",") if v.strip())
    if not entries:
        raise argparse.ArgumentTypeError("--trainable: no entries")
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shv-train --plan",
                                description="Compute plan of SINGER training, measured on the meta device.")
    p.add_argument("--model", choices=("singer", "hallo", "no-msm", "no-sfm", "tiny"), default="singer",
                   help="tiny: the CPU test configuration (use with --size 64)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=1, help="samples per GPU")
    p.add_argument("--motion-frames", type=int, default=None, help="default: the model config's (2)")
    p.add_argument("--dtype", type=_dtype, default=torch.bfloat16)
    p.add_argument("--steps", type=int, default=PAPER_STEPS)
    p.add_argument("--gpus", type=int, default=PAPER_GPUS)
    p.add_argument("--utilisation", type=float, default=0.40, help="fraction of peak FLOP/s achieved")
    p.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    p.add_argument("--online-vae", action="store_true", help="the VAE encodes frames in every step")
    p.add_argument("--no-encoders", action="store_true",
                   help="skip the VAE and wav2vec2 (always for --model tiny: their sizes are full-size)")
    p.add_argument("--trainable", type=_trainable_arg, default="config", metavar="config|stage2|P1,P2,...",
                   help="what trains: config = the shipped config's train.trainable (AudioProj, MSM, SFM; default), "
                        "stage2 = Hallo stage 2 (audioproj, audio and motion modules) plus MSM and SFM, or "
                        "comma-separated entries as train.trainable")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        p.error("--utilisation must be in (0, 1]")
    cfg = {"singer": SingerConfig.full(), "hallo": SingerConfig.hallo(),
           "no-msm": SingerConfig.full(use_msm=False), "no-sfm": SingerConfig.full(use_sfm=False),
           "tiny": SingerConfig.tiny()}[args.model]
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    plans = [make_plan(cfg, frames=args.frames, size=args.size, batch=args.batch, gradient_checkpointing=ckpt,
                       motion_frames=args.motion_frames, dtype=args.dtype, steps=args.steps, gpus=args.gpus,
                       utilisation=args.utilisation, online_vae=args.online_vae,
                       include_encoders=not (args.no_encoders or args.model == "tiny"),
                       trainable=args.trainable) for ckpt in modes]
    if args.json:
        print(json.dumps([pl.to_dict() for pl in plans], indent=1))
    else:
        print(format_plans(plans))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
