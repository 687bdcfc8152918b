"""Loading the published weights into :class:`singer_model.model.SingerNet` (local files only).

Published files and what they are:

* Hallo ``net.pth`` (``pretrained_models/hallo/net.pth``): one flat state dict, prefixes ``reference_unet.``
  ``denoising_unet.`` ``face_locator.`` ``imageproj.`` ``audioproj.`` — loads 1:1 into SingerNet (Hallo config).
* SINGER ``net.pth``: the same plus ``denoising_unet.hidden_spectral_weighting.{weight [4,1,C,4,4], fc.0.weight,
  fc.2.weight}`` (SFM) and ``audioembed.{dct_layer.weight [bs,4,14,64,64], fc.0.weight, fc.2.weight}`` (MSM).
  Conversion to the paper's batch- and frame-independent parameters (exact, see :mod:`singer_model.msm` and
  :mod:`singer_model.sfm`): ``sfm.band_weight = weight.sum((1, 3, 4))`` [4, C];
  ``msm.w = dct_layer.weight.sum((0, 2))`` [4, 64, 64] (the release's einsum sums the buffer over its batch
  and frame axes, so any batch size 1, 6, ... converts exactly). Writing back puts the value at index 0 of
  the summed axes and zeros elsewhere (sums unchanged). Other latent sizes: ``MultiScaleSpectralModule``
  resizes ``w`` bilinearly; frame counts other than the training one: ``MSMConfig.frame_reduction``.
* SD-1.5 UNet: a diffusers folder (``unet/diffusion_pytorch_model.{safetensors,bin}``) or a single original
  ``.safetensors``/``.ckpt`` (``model.diffusion_model.*``): fills the reference UNet (minus its head) and the
  2D part of the denoising UNet.
* SD VAE (sd-vae-ft-mse): diffusers folder or single file -> ``diffusers.AutoencoderKL``.
* AnimateDiff ``mm_sd_v15_v2.ckpt``: motion modules of the denoising UNet.

Files are read with safetensors or ``torch.load(weights_only=True)``; a missing file raises
:class:`shv_toolkit.core.errors.MissingWeightsError` naming the file and what it is; a key/shape mismatch raises
:class:`CheckpointMismatchError` with a readable diff.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.core.errors import MissingWeightsError, ShvError

log = logging.getLogger(__name__)

Kind = Literal["hallo", "singer"]
StateDict = dict[str, torch.Tensor]

SFM_NATIVE = "denoising_unet.sfm."
SFM_PUBLISHED = "denoising_unet.hidden_spectral_weighting."
MSM_NATIVE = "msm."
MSM_PUBLISHED = "audioembed."
#: shape of the release's MSM buffer at inference (batch 1, 14 frames)
PUBLISHED_MSM_BATCH = 1
PUBLISHED_MSM_FRAMES = 14

SD_VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}


class CheckpointMismatchError(ShvError):
    """A checkpoint's names/shapes differ from what the model expects."""


# ---------------------------------------------------------------------------------------------- files
def read_state_dict(path: str | Path, what: str) -> StateDict:
    """Read a flat state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    ``what`` describes the file for the error message (e.g. "Hallo net.pth (pretrained_models/hallo/net.pth)").
    A nested ``{"state_dict": {...}}`` (Lightning/AnimateDiff style) is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"{what}: file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p), device="cpu")
    else:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"{what} ({p}) does not hold a state dict")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | Path) -> None:
    p = Path(path)
    with atomic_path(p) as tmp:
        if p.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
        else:
            torch.save(dict(sd), tmp)


# ---------------------------------------------------------------------------------------------- layout
def to_published(sd: Mapping[str, torch.Tensor], kind: Kind, sfm_tail: tuple[int, int, int] = (1, 4, 4),
                 msm_batch: int = PUBLISHED_MSM_BATCH, msm_frames: int = PUBLISHED_MSM_FRAMES) -> StateDict:
    """Native SingerNet state dict -> the published ``net.pth`` naming (works on meta tensors too)."""
    has_singer = any(k.startswith((SFM_NATIVE, MSM_NATIVE)) for k in sd)
    if kind == "hallo" and has_singer:
        raise CheckpointMismatchError("a model with MSM/SFM cannot be written as a Hallo net.pth")
    out: StateDict = {}
    for k, v in sd.items():
        if k == SFM_NATIVE + "band_weight":
            m, s, t = sfm_tail
            w = torch.zeros(v.shape[0], m, v.shape[1], s, t, dtype=v.dtype, device=v.device)
            w[:, 0, :, 0, 0] = v
            out[SFM_PUBLISHED + "weight"] = w
        elif k.startswith(SFM_NATIVE):
            out[SFM_PUBLISHED + k[len(SFM_NATIVE):]] = v
        elif k == MSM_NATIVE + "w":
            w = torch.zeros(msm_batch, v.shape[0], msm_frames, *v.shape[1:], dtype=v.dtype, device=v.device)
            w[0, :, 0] = v
            out[MSM_PUBLISHED + "dct_layer.weight"] = w
        elif k.startswith(MSM_NATIVE):
            out[MSM_PUBLISHED + k[len(MSM_NATIVE):]] = v
        else:
            out[k] = v
    if kind == "singer":
        # the release registers the MSM last
        msm_keys = [k for k in out if k.startswith(MSM_PUBLISHED)]
        out = {**{k: v for k, v in out.items() if not k.startswith(MSM_PUBLISHED)}, **{k: out[k] for k in msm_keys}}
    return out


def from_published(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Published ``net.pth`` naming -> native SingerNet names (exact conversion of the SINGER modules)."""
    out: StateDict = {}
    for k, v in sd.items():
        if k == SFM_PUBLISHED + "weight":
            if v.ndim != 5:
                raise CheckpointMismatchError(f"{k}: expected 5 dims [4,1,C,4,4], got {tuple(v.shape)}")
            out[SFM_NATIVE + "band_weight"] = v.sum(dim=(1, 3, 4))
        elif k.startswith(SFM_PUBLISHED):
            out[SFM_NATIVE + k[len(SFM_PUBLISHED):]] = v
        elif k == MSM_PUBLISHED + "dct_layer.weight":
            if v.ndim != 5:
                raise CheckpointMismatchError(f"{k}: expected 5 dims [bs,4,frames,H,W], got {tuple(v.shape)}")
            out[MSM_NATIVE + "w"] = v.sum(dim=(0, 2))
        elif k.startswith(MSM_PUBLISHED):
            out[MSM_NATIVE + k[len(MSM_PUBLISHED):]] = v
        else:
            out[k] = v
    return out


def detect_kind(sd: Mapping[str, torch.Tensor]) -> Kind:
    return "singer" if any(k.startswith((MSM_PUBLISHED, SFM_PUBLISHED)) for k in sd) else "hallo"


def diff_layouts(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                 shape_exempt: tuple[str, ...] = (), limit: int = 20) -> str:
    """Readable diff of two name->shape maps ('' when equal)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [(k, tuple(expected[k]), tuple(found[k])) for k in expected
             if k in found and tuple(expected[k]) != tuple(found[k]) and k not in shape_exempt]
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing: " + ", ".join(missing[:limit]) + (" ..." if len(missing) > limit else ""))
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected[:limit])
                     + (" ..." if len(unexpected) > limit else ""))
    if wrong:
        lines.append(f"{len(wrong)} shape mismatches: " + "; ".join(f"{k} expected {e} found {f}"
                                                                    for k, e, f in wrong[:limit]))
    return "\n".join(lines)


def _shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------- net.pth
def load_net_checkpoint(model: nn.Module, path: str | Path, kind: Kind | None = None,
                        allow_missing_singer_modules: bool = False) -> Kind:
    """Load a published Hallo or SINGER ``net.pth`` (or one written by :func:`save_net_checkpoint`).

    Strict: every name and shape must match the model's published layout, except the batch/frame axes of
    SINGER's MSM buffer (any ``[bs, 4, frames, H, W]`` converts). Loading a SINGER file into a model with
    MSM/SFM switched off requires ``allow_missing_singer_modules`` (their weights are then ignored);
    loading a Hallo file into a model with MSM/SFM leaves those at their initialisation only with the same
    flag. Returns the detected kind.
    """
    what = "SINGER/Hallo net.pth (flat state dict of reference_unet, denoising_unet, face_locator, imageproj, audioproj)"
    sd = read_state_dict(path, what)
    found_kind = detect_kind(sd)
    if kind is not None and kind != found_kind:
        raise CheckpointMismatchError(f"{path} is a {found_kind} checkpoint, expected {kind}")
    native_model = model.state_dict()
    expected = _shapes(to_published(native_model, "singer" if _has_singer(native_model) else "hallo"))
    found = _shapes(sd)
    singer_prefixes = (MSM_PUBLISHED, SFM_PUBLISHED)
    if allow_missing_singer_modules:
        expected = {k: v for k, v in expected.items() if not k.startswith(singer_prefixes) or k in found}
        found = {k: v for k, v in found.items() if not k.startswith(singer_prefixes) or k in expected}
        sd = {k: v for k, v in sd.items() if k in found}
    report = diff_layouts(expected, found, shape_exempt=(MSM_PUBLISHED + "dct_layer.weight",))
    if report:
        raise CheckpointMismatchError(f"{path} does not match the model:\n{report}")
    native = from_published(sd)
    result = model.load_state_dict(native, strict=not allow_missing_singer_modules)
    if allow_missing_singer_modules and (result.missing_keys or result.unexpected_keys):
        stray = [k for k in result.missing_keys if not k.startswith((SFM_NATIVE, MSM_NATIVE))]
        if stray or result.unexpected_keys:
            raise CheckpointMismatchError(f"unexpected load result: missing {stray}, unexpected {result.unexpected_keys}")
    log.info("loaded %s net.pth from %s (%d tensors)", found_kind, path, len(sd))
    return found_kind


def save_net_checkpoint(model: nn.Module, path: str | Path, kind: Kind | None = None) -> None:
    """Write the model in the published flat ``net.pth`` naming (``.pth`` via torch.save or ``.safetensors``)."""
    native = model.state_dict()
    k: Kind = kind or ("singer" if _has_singer(native) else "hallo")
    save_state_dict({n: t.detach().cpu() for n, t in to_published(native, k).items()}, path)


def _has_singer(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith((SFM_NATIVE, MSM_NATIVE)) for k in sd)


# ---------------------------------------------------------------------------------------------- SD-1.5 / AnimateDiff
def _diffusers_weight_file(folder: Path, sub: str) -> Path | None:
    for base in (folder / sub, folder):
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (base / name).is_file():
                return base / name
    return None


def read_sd15_unet(path: str | Path, unet_config: Mapping) -> StateDict:
    """SD-1.5 UNet weights in diffusers naming, from a diffusers folder or an original single file."""
    p = Path(path)
    what = "Stable Diffusion 1.5 UNet (runwayml/stable-diffusion-v1-5: unet/ folder or v1-5-pruned.safetensors)"
    if p.is_dir():
        f = _diffusers_weight_file(p, "unet")
        if f is None:
            raise MissingWeightsError(f"{what}: no diffusion_pytorch_model.(safetensors|bin) under {p}")
        return read_state_dict(f, what)
    sd = read_state_dict(p, what)
    if any(k.startswith("model.diffusion_model.") for k in sd):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        sd = convert_ldm_unet_checkpoint(sd, dict(unet_config))
    return sd


def load_sd15_unet(model: nn.Module, path: str | Path) -> None:
    """Initialise the reference UNet and the 2D part of the denoising UNet from SD-1.5 (strict on 2D keys)."""
    ref = model.reference_unet
    sd = read_sd15_unet(path, ref.config)
    ref_expected = _shapes(ref.state_dict())
    head = ("conv_norm_out.", "conv_out.")
    ref_sd = {k: v for k, v in sd.items() if not k.startswith(head)}
    report = diff_layouts(ref_expected, _shapes(ref_sd))
    if report:
        raise CheckpointMismatchError(f"SD-1.5 UNet {path} does not match the reference UNet:\n{report}")
    ref.load_state_dict(ref_sd, strict=True)
    den = model.denoising_unet
    den_expected = {k: v for k, v in _shapes(den.state_dict()).items()
                    if ".motion_modules." not in k and ".audio_modules." not in k and not k.startswith("sfm.")}
    report = diff_layouts(den_expected, _shapes(sd))
    if report:
        raise CheckpointMismatchError(f"SD-1.5 UNet {path} does not match the denoising UNet:\n{report}")
    den.load_state_dict(sd, strict=False)


def load_motion_module(model: nn.Module, path: str | Path) -> None:
    """AnimateDiff ``mm_sd_v15_v2.ckpt`` into the denoising UNet's motion modules (strict on those keys)."""
    what = "AnimateDiff motion module mm_sd_v15_v2.ckpt (guoyww/animatediff)"
    sd = read_state_dict(path, what)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    den = model.denoising_unet
    expected = {k: v for k, v in _shapes(den.state_dict()).items() if ".motion_modules." in k}
    found = {k: v for k, v in _shapes(sd).items() if ".motion_modules." in k}
    report = diff_layouts(expected, found)
    if report:
        raise CheckpointMismatchError(f"{path} does not match the motion modules:\n{report}")
    den.load_state_dict({k: sd[k] for k in expected}, strict=False)


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """SD VAE (sd-vae-ft-mse) from a diffusers folder or a single file -> ``diffusers.AutoencoderKL``."""
    from diffusers import AutoencoderKL

    p = Path(path)
    what = "SD VAE (stabilityai/sd-vae-ft-mse: folder or diffusion_pytorch_model.safetensors)"
    if p.is_dir():
        f = _diffusers_weight_file(p, "vae")
        if f is None:
            raise MissingWeightsError(f"{what}: no diffusion_pytorch_model.(safetensors|bin) under {p}")
        cfg_file = f.parent / "config.json"
        config = dict(SD_VAE_CONFIG)
        if cfg_file.is_file():
            config.update({k: v for k, v in json.loads(cfg_file.read_text()).items() if not k.startswith("_")})
        sd = read_state_dict(f, what)
    else:
        config = dict(SD_VAE_CONFIG)
        sd = read_state_dict(p, what)
    if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in sd):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        sd = convert_ldm_vae_checkpoint(sd, config)
    accepted = inspect.signature(AutoencoderKL.__init__).parameters  # follows register_to_config's wrapper
    vae = AutoencoderKL(**{k: v for k, v in config.items() if k in accepted})
    vae.load_state_dict(sd, strict=True)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class WeightPaths:
    """Local weight locations (a JSON/YAML file with these keys; relative paths resolve against it)."""

    hallo_net: str | None = None  #: pretrained_models/hallo/net.pth
    singer_net: str | None = None  #: the SINGER authors' net.pth
    sd15_unet: str | None = None  #: pretrained_models/stable-diffusion-v1-5 (folder) or single file
    vae: str | None = None  #: pretrained_models/sd-vae-ft-mse
    motion_module: str | None = None  #: pretrained_models/motion_module/mm_sd_v15_v2.ckpt
    wav2vec2: str | None = None  #: pretrained_models/wav2vec/wav2vec2-base-960h (used by part 2)
    face_analysis: str | None = None  #: pretrained_models/face_analysis (insightface, part 2)

    @classmethod
    def from_file(cls, path: str | Path) -> WeightPaths:
        p = Path(path)
        if not p.is_file():
            raise MissingWeightsError(f"weight path config not found: {p}")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise CheckpointMismatchError(f"{p}: unknown weight keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: str((p.parent / v).resolve()) if v else None for k, v in data.items()})


def load_pretrained(model: nn.Module, paths: WeightPaths, source: Literal["auto", "hallo", "singer", "base"] = "auto"
                    ) -> str:
    """Initialise ``model`` from local files: a SINGER or Hallo ``net.pth`` when given (``auto`` prefers the
    SINGER file for a model with MSM/SFM, Hallo otherwise), else SD-1.5 UNet + AnimateDiff motion modules
    (the paper's initialisation before Hallo training). Returns what was loaded."""
    singer_model = _has_singer(model.state_dict())
    if source in ("auto", "singer") and paths.singer_net and (singer_model or source == "singer"):
        load_net_checkpoint(model, paths.singer_net, "singer", allow_missing_singer_modules=not singer_model)
        return "singer"
    if source in ("auto", "hallo") and paths.hallo_net:
        load_net_checkpoint(model, paths.hallo_net, "hallo", allow_missing_singer_modules=singer_model)
        return "hallo"
    if source in ("auto", "base") and paths.sd15_unet:
        load_sd15_unet(model, paths.sd15_unet)
        if paths.motion_module:
            load_motion_module(model, paths.motion_module)
        return "base"
    raise MissingWeightsError(
        "no weights configured: set singer_net or hallo_net (net.pth), or sd15_unet (+ motion_module)")
