"""SINGER inference: a reference image + driving audio of any length -> video frames (and an mp4).

Checkpoint directory (what :func:`load_pipeline` reads; ``shv-train`` writes every checkpoint in it; a config
YAML file of the same content, e.g. ``singer_model/configs/hallo_release.yaml``, may stand for it)::

    DIR/config.yaml          model:   SingerConfig as a dict (or {preset: full|tiny|hallo|singer_published|singer_release})
                             data:    DataConfig (size, n_frames = window length, fps, ...)
                             weights: vae, wav2vec2, face_analysis (+ optional hallo_net / singer_net / sd15_unet /
                                      motion_module, as singer_model.checkpoints.WeightPaths)
                             net:     list of state files loaded in order, later ones override earlier ones:
                                      native safetensors written by shv-train (base_net.safetensors,
                                      trainable.safetensors) or a published Hallo/SINGER net.pth
                             scheduler: DDIMScheduler kwargs
                             inference: {steps, guidance_scale, cfg_uncond}: the sampling defaults (below)
    DIR/trainable.safetensors  (for example)

Relative paths resolve against ``config.yaml``'s folder. Every file is read with safetensors or
``torch.load(weights_only=True)``; a missing one raises :class:`MissingWeightsError` naming it.

Generation (Hallo's long-video scheme): the audio gives ``T = round(len / 16000 * fps)`` frames; windows of
``data.n_frames`` frames are generated one after another; the reference UNet sees the reference image and
the last ``n_motion_frames`` latents of the previous window (the reference latent repeated for the first
window); each window is denoised from seeded Gaussian noise by DDIM (``steps``) with classifier-free
guidance (``guidance_scale``; ``pred = uncond + scale * (cond - uncond)``, skipped at scale 1); the last
window is padded with the last audio frame and trimmed. The frames are at the model's resolution
(``data.size``). ``steps``, ``guidance_scale`` and ``cfg_uncond`` not given to :meth:`SingerPipeline.generate`
come from the checkpoint's ``inference`` section, else 40, 3.5 and ``"release"``. MSM gates are conditioned on
each DDIM step's ``z_t`` (the paper), or once per window on the initial noise when the model's
``msm.condition`` is ``"initial_noise"`` (the release; preset ``singer_release``).

What the unconditional branch drops (``cfg_uncond``):

* ``"release"`` (Hallo's ``FaceAnimatePipeline``): the identity embedding is zeroed (ImageProj of zeros, also
  the tokens the reference UNet sees), the FaceLocator output is zeroed, the audio tokens are zeroed; the
  reference image and the motion frames stay.
* ``"drop_reference"`` (this project's earlier scheme, matching ``train.cfg_dropout: buckets``): the reference
  image and motion frames, the identity embedding and the audio are dropped; the FaceLocator input stays.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError, UsageError
from singer_model.checkpoints import MSM_NATIVE, SFM_NATIVE, from_published, load_vae, read_state_dict
from singer_model.config import SingerConfig
from singer_model.data import (
    AudioEncoder,
    DataConfig,
    IdentityEmbedder,
    Preprocessor,
    decode_latents,
    window_features,
)
from singer_model.model import SingerNet

log = logging.getLogger(__name__)

VARIANTS = {
    "singer": (True, True),
    "singer-no-msm": (False, True),
    "singer-no-sfm": (True, False),
    "singer-no-both": (False, False),
}

#: Hallo's inference scheduler (configs/inference/default.yaml with enable_zero_snr)
DEFAULT_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
    "steps_offset": 1, "clip_sample": False, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
CONFIG_NAME = "config.yaml"
#: sampling defaults when neither the caller nor the checkpoint's ``inference`` section gives one (Hallo's
#: configs/inference/default.yaml: 40 steps, cfg_scale 3.5)
INFERENCE_DEFAULTS: dict[str, Any] = {"steps": 40, "guidance_scale": 3.5, "cfg_uncond": "release"}
CFG_UNCOND_MODES = ("release", "drop_reference")


def model_config_from(d: dict[str, Any]) -> SingerConfig:
    """``{preset: name, **scalar overrides}`` or a full :meth:`SingerConfig.to_dict` dict."""
    d = dict(d or {})
    preset = d.pop("preset", None)
    if preset is None:
        return SingerConfig.from_dict(d)
    if preset not in ("full", "tiny", "hallo", "singer_published", "singer_release"):
        raise UsageError(f"unknown model preset {preset!r}")
    return getattr(SingerConfig, preset)(**d)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"checkpoint config not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{p}: expected a mapping")
    return data


def checkpoint_config(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """``(config, base folder)`` of a checkpoint directory (its ``config.yaml``) or of a config YAML file such
    as ``singer_model/configs/hallo_release.yaml`` (relative paths resolve against the file's folder)."""
    p = Path(checkpoint)
    if p.suffix in (".yaml", ".yml") and not p.is_dir():
        return read_config(p), p.parent
    return read_config(p / CONFIG_NAME), p


def _resolve(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else (base / p).resolve())


def load_net(cfg: SingerConfig, files: list[str], base: Path) -> SingerNet:
    """Build the net and fill it from ``files`` (in order); every parameter must be covered."""
    net = SingerNet(cfg)
    expected = net.state_dict()
    covered: set[str] = set()
    disabled = tuple(p for p, on in ((MSM_NATIVE, cfg.use_msm), (SFM_NATIVE, cfg.use_sfm)) if not on)
    for f in files:
        path = _resolve(base, f)
        sd = read_state_dict(path, "SINGER network weights (checkpoint 'net' entry)")
        sd = from_published(sd)
        sd = {k: v for k, v in sd.items() if not (disabled and k.startswith(disabled))}
        unexpected = sorted(set(sd) - set(expected))
        if unexpected:
            raise MissingWeightsError(f"{path}: names the model does not have, e.g. {unexpected[:5]}")
        bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if bad:
            raise MissingWeightsError(f"{path}: shape mismatch for {bad[:5]}")
        net.load_state_dict(sd, strict=False)
        covered |= set(sd)
    missing = sorted(set(expected) - covered)
    if missing:
        raise MissingWeightsError(f"checkpoint files {files} do not provide {len(missing)} tensors, e.g. {missing[:5]}")
    return net.eval().requires_grad_(False)


@dataclass
class GenerationRequest:
    """One clip for :meth:`SingerPipeline.generate_batch`."""

    reference_image: np.ndarray  #: (H, W, 3) uint8 RGB
    audio: np.ndarray  #: float32 mono, 16 kHz
    num_frames: int | None = None  #: None: the audio's length at fps
    seed: int = 0


@dataclass
class _ClipState:
    """A clip's conditioning and its progress through the windows."""

    n: int
    feats: torch.Tensor
    ref: torch.Tensor
    face_emb: torch.Tensor
    masks: list[torch.Tensor]
    mask_fea: torch.Tensor
    motion: torch.Tensor
    gen: torch.Generator
    out: list[torch.Tensor] = field(default_factory=list)

    def window_audio(self, s: int, win: int) -> torch.Tensor:
        af = self.feats[s:s + win]
        if af.shape[0] < win:  # the last window: padded with the last audio frame (trimmed afterwards)
            af = torch.cat([af, af[-1:].expand(win - af.shape[0], *af.shape[1:])])
        return af[None]


class SingerPipeline:
    """Net + VAE + preprocessing + DDIM sampling (see module docstring)."""

    def __init__(self, net: SingerNet, pre: Preprocessor, scheduler: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", defaults: dict[str, Any] | None = None,
                 compile_backend: str | Any | None = None) -> None:
        self.net = net
        # the denoising forward, run at every DDIM step: torch.compile'd with ``compile_backend`` ("inductor":
        # 0.170 vs 0.245 s per CFG step on an H200 after about 150 s of compiling, perf/RESULTS.md), else eager
        self.compile_backend = compile_backend
        self._denoise = net if compile_backend is None else torch.compile(net, backend=compile_backend)
        self.pre = pre
        self.scheduler_kwargs = dict(DEFAULT_SCHEDULER if scheduler is None else scheduler)
        self.device = torch.device(device)
        self.defaults = {**INFERENCE_DEFAULTS, **{k: v for k, v in (defaults or {}).items() if v is not None}}
        if self.defaults["cfg_uncond"] not in CFG_UNCOND_MODES:
            raise UsageError(f"inference.cfg_uncond must be one of {CFG_UNCOND_MODES}, got {self.defaults['cfg_uncond']!r}")

    @property
    def data(self) -> DataConfig:
        return self.pre.cfg

    @property
    def identity_backend(self) -> str:
        """The identity embedding in use ("insightface" or "fallback"), for result rows."""
        return self.pre.identity.backend

    def _scheduler(self) -> Any:
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self.scheduler_kwargs)

    def _settings(self, steps: int | None, guidance_scale: float | None, cfg_uncond: str | None
                  ) -> tuple[int, float, str]:
        steps = int(self.defaults["steps"] if steps is None else steps)
        guidance_scale = float(self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
        mode = self.defaults["cfg_uncond"] if cfg_uncond is None else cfg_uncond
        if mode not in CFG_UNCOND_MODES:
            raise UsageError(f"cfg_uncond must be one of {CFG_UNCOND_MODES}, got {mode!r}")
        return steps, guidance_scale, mode

    @torch.no_grad()
    def generate(self, reference_image: np.ndarray, audio: np.ndarray, num_frames: int | None = None,
                 fps: float | None = None, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, progress: bool = False,
                 cfg_uncond: str | None = None, batch_cfg: bool = True) -> np.ndarray:
        """``(T, size, size, 3)`` uint8 frames driven by 16 kHz mono ``audio``; ``steps``, ``guidance_scale``,
        ``cfg_uncond`` default to the checkpoint's ``inference`` settings (module docstring). One clip of
        :meth:`generate_batch`."""
        return self.generate_batch([GenerationRequest(reference_image, audio, num_frames, seed)], fps=fps,
                                   steps=steps, guidance_scale=guidance_scale, progress=progress,
                                   cfg_uncond=cfg_uncond, batch_cfg=batch_cfg)[0]

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest], fps: float | None = None,
                       steps: int | None = None, guidance_scale: float | None = None, progress: bool = False,
                       cfg_uncond: str | None = None, batch_cfg: bool = True) -> list[np.ndarray]:
        """Several clips at once: window ``k`` of every clip that has one goes through the net in ONE batch
        (clips of different lengths drop out as they end), and with ``batch_cfg`` (release CFG) the
        conditional and unconditional branches are one forward of twice the batch, as the release's
        pipeline does. Every clip keeps its own noise stream (``torch.Generator`` seeded with its ``seed``),
        so each clip's frames equal those of :meth:`generate` alone, up to floating-point summation order.
        ``batch_cfg=False`` runs the two branches as two forwards (``cfg_uncond="drop_reference"`` always
        does: its unconditional branch attends to no reference)."""
        from tqdm import tqdm

        if not requests:
            return []
        steps, guidance_scale, mode = self._settings(steps, guidance_scale, cfg_uncond)
        fps = float(fps or self.data.fps)
        dev, net = self.device, self.net
        dtype = next(net.parameters()).dtype
        win, m = self.data.n_frames, net.cfg.n_motion_frames
        guided = guidance_scale != 1.0
        one_forward = guided and batch_cfg and mode == "release"
        clips = [self._prepare(r, fps, dev, dtype) for r in requests]
        n_windows = max(-(-c.n // win) for c in clips)
        sched = self._scheduler()
        sched.set_timesteps(steps, device=dev)
        zero_tokens = torch.zeros(1, win, net.cfg.audio_tokens, net.cfg.unet.audio_attention_dim, device=dev,
                                  dtype=dtype)
        for k in tqdm(range(n_windows), desc="windows", unit="win", disable=not progress):
            s = k * win
            act = [c for c in clips if s < c.n]
            a = len(act)
            af = torch.cat([c.window_audio(s, win) for c in act]).to(dev, dtype)
            ref_in = torch.cat([torch.cat([c.ref[None], c.motion]) for c in act])  # sample-major [A*(1+M)]
            face_emb = torch.cat([c.face_emb for c in act])
            zero_emb = torch.zeros_like(face_emb)
            masks = [torch.cat([c.masks[i] for c in act]) for i in range(3)]
            mask_fea = torch.cat([c.mask_fea for c in act])
            ref_feats = net.reference_features(ref_in, net.imageproj(face_emb))
            # release: the unconditional branch keeps reference + motion frames, seen with the zero identity
            unc_feats = net.reference_features(ref_in, net.imageproj(zero_emb)) if guided and mode == "release" else None
            # the sampler's state stays float32; the net runs in its own dtype (bf16 / fp16 / fp32)
            lat = torch.cat([torch.randn((1, *c.ref.shape[:1], win, *c.ref.shape[1:]), generator=c.gen)
                             for c in act]).to(dev, torch.float32)
            lat = lat * sched.init_noise_sigma
            # the release conditions MSM once per window on the initial noise; else at every step (z_t)
            per_step_msm = net.msm is not None and net.cfg.msm.condition != "initial_noise"
            tokens = None if per_step_msm else net.encode_audio(af, lat.to(dtype) if net.msm is not None else None)
            unc_tokens = zero_tokens.expand(a, -1, -1, -1)
            if one_forward:
                assert unc_feats is not None
                emb2 = torch.cat([face_emb, zero_emb])
                af2 = torch.cat([af, af])
                masks2 = [torch.cat([x, x]) for x in masks]
                # no FaceLocator feature in the unconditional half (= Hallo's zeroed one)
                fea2 = torch.cat([mask_fea, torch.zeros_like(mask_fea)])
                feats2 = {key: torch.cat([v, unc_feats[key]]) for key, v in ref_feats.items()}
            for t in sched.timesteps:
                inp = sched.scale_model_input(lat, t).to(dtype)
                tok = net.encode_audio(af, inp) if per_step_msm else tokens
                if one_forward:
                    both = self._denoise(torch.cat([inp, inp]), t.reshape(1).expand(2 * a).to(dev), None, emb2, af2, None,
                               *masks2, audio_tokens=torch.cat([tok, unc_tokens]), reference_features=feats2,
                               mask_features=fea2)
                    pred, unc = both.float().chunk(2)
                    pred = unc + guidance_scale * (pred - unc)
                else:
                    tt = t.reshape(1).expand(a).to(dev)
                    pred = self._denoise(inp, tt, None, face_emb, af, None, *masks, reference_features=ref_feats,
                                         audio_tokens=tok, mask_features=mask_fea).float()
                    if guided:
                        if mode == "release":  # no FaceLocator feature (= Hallo's zeroed one), zero audio tokens
                            unc = self._denoise(inp, tt, None, zero_emb, af, None, *masks, audio_tokens=unc_tokens,
                                                reference_features=unc_feats).float()
                        else:
                            unc = self._denoise(inp, tt, None, zero_emb, af, None, *masks, uncond_img_fwd=True,
                                                audio_tokens=unc_tokens, mask_features=mask_fea).float()
                        pred = unc + guidance_scale * (pred - unc)
                lat = sched.step(pred, t, lat).prev_sample
            for i, c in enumerate(act):
                frames = lat[i].permute(1, 0, 2, 3)  # [F, C, h, w]
                c.motion = (frames[-m:] if m else frames[:0]).to(dtype)
                c.out.append(frames[: min(win, c.n - s)].cpu())
        return [decode_latents(self.pre.vae, torch.cat(c.out)) for c in clips]

    def _prepare(self, r: GenerationRequest, fps: float, dev: torch.device, dtype: torch.dtype) -> _ClipState:
        net = self.net
        audio = np.asarray(r.audio, dtype=np.float32).reshape(-1)
        n = int(r.num_frames) if r.num_frames is not None else int(round(len(audio) / self.data.sample_rate * fps))
        if n < 1:
            raise UsageError("audio too short for one frame")
        cond = self.pre.reference(r.reference_image)
        feats = window_features(self.pre.audio(audio, n), net.cfg.audio_window)
        win = self.data.n_frames
        ref = cond.ref_latent.to(dev, dtype)
        region = cond.face_region[None, None].expand(1, 3, -1, -1).to(dev, dtype)
        masks = [x[None, None].expand(1, win, -1, -1).to(dev, dtype)
                 for x in (cond.full_mask, cond.face_mask, cond.lip_mask)]
        return _ClipState(
            n=n, feats=feats, ref=ref, face_emb=cond.face_emb[None].to(dev, dtype), masks=masks,
            mask_fea=net.face_locator(region),  # constant over the clip: computed once
            motion=ref[None].expand(net.cfg.n_motion_frames, -1, -1, -1),
            gen=torch.Generator("cpu").manual_seed(int(r.seed)),
        )

    def close(self) -> None:
        self.pre.close()


def load_pipeline(checkpoint_dir: str | os.PathLike, variant: str = "singer", device: str = "cpu",
                  dtype: torch.dtype = torch.float32, compile_backend: str | Any | None = None) -> SingerPipeline:
    """Everything :func:`generate_video` needs, from a checkpoint directory or config YAML (module docstring).
    ``compile_backend``: torch.compile the denoising forward with this backend (e.g. "inductor"); None: eager."""
    if variant not in VARIANTS:
        raise UsageError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    conf, base = checkpoint_config(checkpoint_dir)
    use_msm, use_sfm = VARIANTS[variant]
    mcfg = model_config_from(conf.get("model") or {})
    mcfg = replace(mcfg, use_msm=mcfg.use_msm and use_msm, use_sfm=mcfg.use_sfm and use_sfm,
                   gradient_checkpointing=False)
    files = conf.get("net") or []
    if not files:
        raise MissingWeightsError(f"{checkpoint_dir}: no 'net' weight files listed")
    net = load_net(mcfg, list(files), base).to(device=device, dtype=dtype)
    weights = conf.get("weights") or {}
    vae_path = _resolve(base, weights.get("vae"))
    w2v_path = _resolve(base, weights.get("wav2vec2"))
    if vae_path is None or w2v_path is None:
        raise MissingWeightsError(f"{checkpoint_dir}: weights.vae and weights.wav2vec2 are required")
    data = DataConfig.from_dict(conf.get("data") or {})
    vae = load_vae(vae_path, dtype=dtype, device=device)
    try:
        identity = IdentityEmbedder(mcfg.image_embed_dim, _resolve(base, weights.get("face_analysis")),
                                    data.identity_backend, device)
    except MissingWeightsError as e:
        raise MissingWeightsError(f"{checkpoint_dir} was made with identity_backend {data.identity_backend!r} "
                                  f"and cannot be evaluated with another: {e}") from e
    pre = Preprocessor(data, vae, AudioEncoder(w2v_path, device, data.wav2vec_resample), identity)
    return SingerPipeline(net, pre, conf.get("scheduler"), device, conf.get("inference"), compile_backend)


DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The inference dtype: ``None`` / ``"auto"`` = bf16 on CUDA, float32 elsewhere; else bf16 / fp16 / fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@functools.lru_cache(maxsize=1)
def _cached_pipeline(checkpoint_dir: str, variant: str, device: str, dtype: torch.dtype) -> SingerPipeline:
    return load_pipeline(checkpoint_dir, variant, device, dtype)


def generate_video(
    reference_image: np.ndarray,
    audio: np.ndarray,
    checkpoint_dir: str | os.PathLike,
    variant: str = "singer",
    num_frames: int | None = None,
    fps: float = 25,
    seed: int = 0,
    device: str = "cpu",
    steps: int | None = None,
    guidance_scale: float | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    cfg_uncond: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 (``T`` = audio length at ``fps`` unless ``num_frames``); with ``out``,
    also an mp4 with the audio muxed. ``steps``, ``guidance_scale``, ``cfg_uncond``: None = the checkpoint's
    ``inference`` settings. ``dtype``: see :func:`resolve_dtype` (default bf16 on CUDA, float32 on CPU). The
    loaded pipeline is reused across calls with the same checkpoint."""
    pipe = _cached_pipeline(str(Path(checkpoint_dir).resolve()), variant, device, resolve_dtype(dtype, device))
    frames = pipe.generate(reference_image, audio, num_frames=num_frames, fps=fps, seed=seed, steps=steps,
                           guidance_scale=guidance_scale, progress=progress, cfg_uncond=cfg_uncond)
    if out is not None:
        write_result(out, frames, audio, fps, pipe.data.sample_rate)
    return frames


def write_result(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, fps: float = 25,
                 sample_rate: int = 16000) -> Path:
    """mp4 (H.264 + AAC) with the audio trimmed/padded to the video's duration."""
    n = int(round(len(frames) / fps * sample_rate))
    a = np.asarray(audio, np.float32).reshape(-1)[:n]
    if len(a) < n:
        a = np.pad(a, (0, n - len(a)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return media.write_video(path, frames, fps=fps, audio=a, sample_rate=sample_rate)
