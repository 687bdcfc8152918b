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
from dataclasses import replace
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


class SingerPipeline:
    """Net + VAE + preprocessing + DDIM sampling (see module docstring)."""

    def __init__(self, net: SingerNet, pre: Preprocessor, scheduler: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", defaults: dict[str, Any] | None = None) -> None:
        self.net = net
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

    @torch.no_grad()
    def generate(self, reference_image: np.ndarray, audio: np.ndarray, num_frames: int | None = None,
                 fps: float | None = None, seed: int = 0, steps: int | None = None,
                 guidance_scale: float | None = None, progress: bool = False,
                 cfg_uncond: str | None = None) -> np.ndarray:
        """``(T, size, size, 3)`` uint8 frames driven by 16 kHz mono ``audio``; ``steps``, ``guidance_scale``,
        ``cfg_uncond`` default to the checkpoint's ``inference`` settings (module docstring)."""
        from tqdm import tqdm

        steps = int(self.defaults["steps"] if steps is None else steps)
        guidance_scale = float(self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
        mode = self.defaults["cfg_uncond"] if cfg_uncond is None else cfg_uncond
        if mode not in CFG_UNCOND_MODES:
            raise UsageError(f"cfg_uncond must be one of {CFG_UNCOND_MODES}, got {mode!r}")
        fps = float(fps or self.data.fps)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = int(num_frames) if num_frames is not None else int(round(len(audio) / self.data.sample_rate * fps))
        if n < 1:
            raise UsageError("audio too short for one frame")
        dev, net = self.device, self.net
        dtype = next(net.parameters()).dtype
        cond = self.pre.reference(reference_image)
        feats = window_features(self.pre.audio(audio, n), net.cfg.audio_window)
        win, m = self.data.n_frames, net.cfg.n_motion_frames
        ref = cond.ref_latent.to(dev, dtype)
        face_emb = cond.face_emb[None].to(dev, dtype)
        zero_emb = torch.zeros_like(face_emb)
        region = cond.face_region[None, None].expand(1, 3, -1, -1).to(dev, dtype)
        masks = [x[None, None].expand(1, win, -1, -1).to(dev, dtype)
                 for x in (cond.full_mask, cond.face_mask, cond.lip_mask)]
        zero_tokens = torch.zeros(1, win, net.cfg.audio_tokens, net.cfg.unet.audio_attention_dim, device=dev, dtype=dtype)
        motion = ref[None].expand(m, -1, -1, -1)
        guided = guidance_scale != 1.0
        gen = torch.Generator("cpu").manual_seed(int(seed))
        sched = self._scheduler()
        out: list[torch.Tensor] = []
        starts = range(0, n, win)
        for s in tqdm(starts, desc="windows", unit="win", disable=not progress):
            af = feats[s:s + win]
            if af.shape[0] < win:
                af = torch.cat([af, af[-1:].expand(win - af.shape[0], *af.shape[1:])])
            af = af[None].to(dev, dtype)
            ref_in = torch.cat([ref[None], motion])
            ref_feats = net.reference_features(ref_in, net.imageproj(face_emb))
            # release: the unconditional branch keeps reference + motion frames, seen with the zero identity
            unc_feats = net.reference_features(ref_in, net.imageproj(zero_emb)) if guided and mode == "release" else None
            sched.set_timesteps(steps, device=dev)
            # the sampler's state stays float32; the net runs in its own dtype (bf16 / fp16 / fp32)
            lat = torch.randn((1, ref.shape[0], win, *ref.shape[1:]), generator=gen).to(dev, torch.float32)
            lat = lat * sched.init_noise_sigma
            # the release conditions MSM once per window on the initial noise; else at every step (z_t)
            tokens = (net.encode_audio(af, lat.to(dtype)) if net.msm is not None
                      and net.cfg.msm.condition == "initial_noise" else None)
            for t in sched.timesteps:
                inp = sched.scale_model_input(lat, t).to(dtype)
                tt = t.reshape(1).to(dev)
                pred = net(inp, tt, None, face_emb, af, region, *masks, reference_features=ref_feats,
                           audio_tokens=tokens)
                if guided:
                    if mode == "release":  # no FaceLocator feature (= Hallo's zeroed one), zero audio tokens
                        unc = net(inp, tt, None, zero_emb, af, None, *masks, audio_tokens=zero_tokens,
                                  reference_features=unc_feats)
                    else:
                        unc = net(inp, tt, None, zero_emb, af, region, *masks, uncond_img_fwd=True,
                                  audio_tokens=zero_tokens)
                    pred = unc + guidance_scale * (pred - unc)
                lat = sched.step(pred.float(), t, lat).prev_sample
            frames = lat[0].permute(1, 0, 2, 3)  # [F, C, h, w]
            motion = (frames[-m:] if m else frames[:0]).to(dtype)
            out.append(frames[: min(win, n - s)].float().cpu())
        return decode_latents(self.pre.vae, torch.cat(out))

    def close(self) -> None:
        self.pre.close()


def load_pipeline(checkpoint_dir: str | os.PathLike, variant: str = "singer", device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> SingerPipeline:
    """Everything :func:`generate_video` needs, from a checkpoint directory or config YAML (module docstring)."""
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
    return SingerPipeline(net, pre, conf.get("scheduler"), device, conf.get("inference"))


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
