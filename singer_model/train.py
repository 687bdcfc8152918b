"""``shv-train``: train SINGER on an SHV manifest (accelerate; CPU, one GPU or many).

Pipeline: :func:`singer_model.data.build_cache` prepares every clip once (VAE latents, wav2vec2 features,
masks, identity embedding; keyed by clip id + config hash). Each step samples ``batch_size`` windows of
``data.n_frames`` frames (reference = the clip's first frame; motion frames = the ``n_motion_frames``
latents before the window; at the clip start the reference repeated; with probability ``start_ratio`` a
simulated start with mid-grey frames' latents, as Hallo's training code (``train.start_motion``)), noises them with the training scheduler (Hallo: DDIM betas, ``scaled_linear``, zero terminal SNR,
v-prediction), applies classifier-free-guidance dropout (:func:`cfg_dropout_case`; by default Hallo stage 2's
two independent 5 % draws for the reference and the audio), optional noise offset and min-SNR-gamma loss
weighting (Hang et al. 2023: ``min(SNR, gamma) / SNR`` for epsilon, ``/ (SNR + 1)`` for v-prediction), and
optimises only the parameters ``train.trainable`` names (everything else ``requires_grad=False``) with Adam(W).

Several processes (``torchrun`` / ``accelerate launch``; gloo on a host without GPU): the CFG dropout case of a
step is a function of ``(seed, step)``, the same in every process, and a dropped branch is multiplied by zero
rather than skipped, so every trainable parameter gets a gradient in every step and DDP's all-reduce never
waits for a process that skipped one (``train.ddp_find_unused_parameters`` is the slower alternative). Each
checkpoint checks that all processes hold bit-identical trainable weights (:class:`ReplicaDivergenceError`)
and saves every process's RNG states.

Output directory::

    OUT/cache/<hash>/<clip>.safetensors   prepared clips
    OUT/base_net.safetensors              frozen initial weights (when not initialised from a net.pth)
    OUT/checkpoints/step-00000500/        trainable.safetensors, optimizer.pt, rng.safetensors, state.json,
                                          config.yaml (a complete shv-infer / shv-bench checkpoint directory)
    OUT/train_log.csv, OUT/val_log.csv    (and OUT/tensorboard/ when tensorboard is installed)

Checkpoints are written atomically (shv_toolkit.core.atomic); the last ``keep_last`` are kept;
``--resume`` loads the newest complete one (weights, optimizer, LR schedule, RNG states, step), so a run
killed at any point loses at most the steps since that checkpoint. RNG states are saved for every
process; a run resumed with another process count re-seeds the others from ``(seed, step, rank)``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from shv_toolkit.core.atomic import atomic_path, remove_partials
from shv_toolkit.core.errors import MediaError, ShvError, UsageError
from shv_toolkit.core.jsoncodec import to_plain
from singer_model.checkpoints import WeightPaths, load_pretrained
from singer_model.config import SHIPPED_TRAINABLE
from singer_model.data import (
    AudioEncoder,
    ClipCache,
    DataConfig,
    IdentityEmbedder,
    Preprocessor,
    build_cache,
    cache_key,
    window_features,
)
from singer_model.infer import CONFIG_NAME, DEFAULT_SCHEDULER, SingerPipeline, model_config_from
from singer_model.model import SingerNet

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainSection:
    """Optimisation settings (defaults: the paper / Hallo stage 2)."""

    learning_rate: float = 1e-5
    max_steps: int = 17000
    batch_size: int = 1  #: per process
    gradient_accumulation_steps: int = 1
    #: parameter-name entries: with a dot a prefix, without a dot a module name anywhere in the path
    trainable: tuple[str, ...] = SHIPPED_TRAINABLE
    mixed_precision: str = "bf16"  #: "no", "fp16", "bf16" (accelerate)
    gradient_checkpointing: bool = True
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0  #: 0 = Adam (paper); Hallo's AdamW uses 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 1
    uncond_img_ratio: float = 0.05
    uncond_audio_ratio: float = 0.05
    uncond_ia_ratio: float = 0.05  #: only used by cfg_dropout "buckets" (the release's config has it, its code not)
    #: CFG dropout scheme (see :func:`cfg_dropout_case`): "release" = Hallo stage 2's code (two independent
    #: draws; a dropped reference skips the reference UNet, the identity embedding stays); "buckets" = three
    #: exclusive buckets (reference+identity / audio / both with uncond_img/audio/ia_ratio)
    cfg_dropout: str = "release"
    #: a dropped branch is multiplied by zero instead of skipped, so every trainable parameter is in every
    #: step's autograd graph (needed by DDP unless ddp_find_unused_parameters)
    cfg_keep_graph: bool = True
    #: the other DDP fix: let DDP search each step's graph for parameters without gradients (slower)
    ddp_find_unused_parameters: bool = False
    start_ratio: float = 0.05  #: probability of a simulated clip start (motion frames replaced, start_motion)
    #: the motion frames of a simulated clip start: "zeros" = latents of mid-grey frames (pixel 0 in [-1, 1]), as
    #: Hallo's and SINGER's training code; "reference" = the reference latent repeated (what inference feeds
    #: the first window, and this project's earlier choice). Windows at a real clip start always get the reference.
    start_motion: str = "zeros"
    noise_offset: float = 0.05  #: 0 disables
    snr_gamma: float | None = 5.0  #: None disables min-SNR weighting
    train_beta_schedule: str = "scaled_linear"  #: Hallo trains with scaled_linear, samples with linear
    checkpoint_every: int = 500
    keep_last: int = 3
    validate_every: int = 1000  #: 0 disables
    val_clips: int = 2
    val_frames: int = 32  #: frames generated per validation clip
    val_steps: int = 40
    seed: int = 42

    def __post_init__(self) -> None:
        if self.start_motion not in ("zeros", "reference"):
            raise UsageError(f"train.start_motion must be 'zeros' or 'reference', got {self.start_motion!r}")
        if self.cfg_dropout not in CFG_DROPOUT_SCHEMES:
            raise UsageError(f"train.cfg_dropout must be one of {CFG_DROPOUT_SCHEMES}, got {self.cfg_dropout!r}")
        for name in ("uncond_img_ratio", "uncond_audio_ratio", "uncond_ia_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"train.{name} must lie in [0, 1]")


CFG_DROPOUT_SCHEMES = ("release", "buckets")
#: separates the CFG dropout stream from every other stream drawn from the run's seed
_CFG_STREAM = 0xCF6


def cfg_dropout_case(tr: TrainSection, step: int) -> tuple[bool, bool]:
    """``(drop reference, drop audio)`` for training step ``step`` (0-based).

    A function of ``(seed, step)`` only: every DDP process draws the same case (so all take the same graph),
    and a resumed run draws what the uninterrupted run drew. ``"release"`` (Hallo ``train_stage2.py``):
    ``u < uncond_img_ratio`` and ``v < uncond_audio_ratio`` from two independent uniforms (0.05 each: 90.25 %
    conditional, 4.75 % reference-only, 4.75 % audio-only, 0.25 % both dropped). ``"buckets"``: one uniform
    split into exclusive buckets ``[0, ti)`` reference, ``[ti, ti+ta)`` audio, ``[ti+ta, ti+ta+tia)`` both.
    """
    u, v = np.random.default_rng([tr.seed, _CFG_STREAM, step]).random(2)
    ti, ta, tia = tr.uncond_img_ratio, tr.uncond_audio_ratio, tr.uncond_ia_ratio
    if tr.cfg_dropout == "release":
        return bool(u < ti), bool(v < ta)
    return bool(u < ti or ti + ta <= u < ti + ta + tia), bool(ti <= u < ti + ta + tia)


@dataclass(frozen=True)
class TrainConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "full"})
    data: DataConfig = field(default_factory=DataConfig)
    weights: dict[str, str | None] = field(default_factory=dict)  #: WeightPaths fields (paths)
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULER))
    train: TrainSection = field(default_factory=TrainSection)
    inference: dict[str, Any] = field(default_factory=lambda: {"steps": 40, "guidance_scale": 3.5})

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown config sections {sorted(unknown)}; known: {sorted(known)}")
        tr = dict(d.get("train") or {})
        bad = set(tr) - {f.name for f in fields(TrainSection)}
        if bad:
            raise UsageError(f"unknown train keys {sorted(bad)}")
        if "trainable" in tr:
            tr["trainable"] = tuple(tr["trainable"])
        weights = dict(d.get("weights") or {})
        wbad = set(weights) - {f.name for f in fields(WeightPaths)}
        if wbad:
            raise UsageError(f"unknown weights keys {sorted(wbad)}")
        if base is not None:
            weights = {k: (str((base / v).resolve()) if v and not Path(v).is_absolute() else v)
                       for k, v in weights.items()}
        sched = dict(DEFAULT_SCHEDULER)
        sched.update(d.get("scheduler") or {})
        return cls(model=dict(d.get("model") or {"preset": "full"}),
                   data=DataConfig.from_dict(d.get("data") or {}), weights=weights, scheduler=sched,
                   train=TrainSection(**tr), inference=dict(d.get("inference") or {"steps": 40, "guidance_scale": 3.5}))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """A YAML config; ``base: OTHER.yaml`` (relative to the file) starts from another config, whose sections
        this file's sections update key by key (the Table 3 ablation configs only name what they change)."""
        return cls.from_dict(_read_config_tree(Path(path)))


def _read_config_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config at ``path`` merged onto its ``base`` chain; weight paths made absolute against their file."""
    p = path.resolve()
    if not p.is_file():
        raise UsageError(f"config not found: {path}")
    if p in seen:
        raise UsageError(f"config base cycle: {' -> '.join(str(x) for x in (*seen, p))}")
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict):
        raise UsageError(f"{p}: expected a mapping")
    d["weights"] = {k: (str((p.parent / v).resolve()) if v and not Path(v).is_absolute() else v)
                    for k, v in (d.get("weights") or {}).items()}
    base = d.pop("base", None)
    if base is None:
        return d
    merged = _read_config_tree(p.parent / base, (*seen, p))
    for k, v in d.items():
        old = merged.get(k)
        merged[k] = {**old, **v} if isinstance(v, dict) and isinstance(old, dict) else v
    return merged


# ---------------------------------------------------------------------------------------------- checkpoints
STEP_PREFIX = "step-"


def list_checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
                   and (p / "state.json").is_file()), key=lambda p: int(p.name[len(STEP_PREFIX):]))


def _trainable_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().contiguous() for n, p in net.named_parameters() if p.requires_grad}


class ReplicaDivergenceError(ShvError):
    """The processes of a multi-process run hold different trainable weights (a synchronisation bug)."""


@dataclass
class TrainResult:
    step: int
    last_loss: float
    checkpoint: Path | None


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Holds the model, data and optimiser state of one run (see module docstring)."""

    def __init__(self, cfg: TrainConfig, manifest: str | os.PathLike, out: str | os.PathLike,
                 val_manifest: str | os.PathLike | None = None, progress: bool = True) -> None:
        from accelerate import Accelerator
        from diffusers import DDIMScheduler

        self.cfg = cfg
        self.tr = cfg.train
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        from accelerate.utils import DistributedDataParallelKwargs

        ddp = DistributedDataParallelKwargs(find_unused_parameters=self.tr.ddp_find_unused_parameters)
        self.acc = Accelerator(mixed_precision=self.tr.mixed_precision, cpu=_launched_without_accelerator(),
                               gradient_accumulation_steps=self.tr.gradient_accumulation_steps,
                               kwargs_handlers=[ddp])
        if self.acc.num_processes > 1 and not (self.tr.cfg_keep_graph or self.tr.ddp_find_unused_parameters):
            raise UsageError("with several processes, train.cfg_keep_graph or train.ddp_find_unused_parameters "
                             "must be on (a CFG-dropped branch leaves parameters without gradients)")
        dev = self.acc.device
        mcfg = replace(model_config_from(cfg.model), gradient_checkpointing=self.tr.gradient_checkpointing)
        torch.manual_seed(self.tr.seed)
        net = SingerNet(mcfg)
        self.net_files = self._init_weights(net)
        self.trainable_names = net.freeze_backbone(tuple(self.tr.trainable))
        if not self.trainable_names:
            raise UsageError(f"train.trainable {self.tr.trainable} matches no parameter")
        w = cfg.weights
        if not w.get("vae") or not w.get("wav2vec2"):
            raise UsageError("weights.vae and weights.wav2vec2 are required")
        from singer_model.checkpoints import load_vae

        vae = load_vae(w["vae"], device=dev)
        identity = IdentityEmbedder(mcfg.image_embed_dim, w.get("face_analysis"), cfg.data.identity_backend, dev)
        self.identity_backend = identity.backend  #: the one used (recorded in every checkpoint)
        self.pre = Preprocessor(cfg.data, vae, AudioEncoder(w["wav2vec2"], dev, cfg.data.wav2vec_resample), identity)
        key = cache_key(cfg.data, w["vae"], w["wav2vec2"], identity.backend,
                        {"layers": mcfg.audio_layers, "dim": mcfg.audio_feature_dim, "emb": mcfg.image_embed_dim})
        self.cache = ClipCache(self.out / "cache", key)
        with self.acc.main_process_first():
            ids = build_cache(manifest, self.pre, self.cache, progress=progress and self.acc.is_main_process)
        self.start_latent = _grey_latent(vae, cfg.data.size)
        self.pre.close()
        need = cfg.data.n_frames
        self.clip_ids = [c for c in ids if self._n_frames(c) >= need]
        if not self.clip_ids:
            raise MediaError(f"no clip has {need} frames")
        self.val_manifest = Path(val_manifest) if val_manifest else self._default_val(Path(manifest))
        sk = dict(cfg.scheduler, beta_schedule=self.tr.train_beta_schedule)
        self.noise_sched = DDIMScheduler(**sk)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.tr.learning_rate, betas=(self.tr.adam_beta1, self.tr.adam_beta2),
                                weight_decay=self.tr.weight_decay, eps=self.tr.adam_epsilon)
        warm = max(1, self.tr.lr_warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        self.net, self.opt = self.acc.prepare(net, opt)
        self.lr_sched = sched
        self.rng = np.random.default_rng([self.tr.seed, self.acc.process_index])
        self.gen = torch.Generator("cpu").manual_seed(self.tr.seed * 1000 + self.acc.process_index)
        self.step = 0
        self.last_loss = math.nan
        #: step of the newest checkpoint written or loaded (decides the final save identically in every process)
        self.saved_step: int | None = None

    # ---------------------------------------------------------------- setup helpers
    def _init_weights(self, net: SingerNet) -> list[str]:
        """Published weights when configured (their files are listed in checkpoints), else a saved base."""
        from safetensors.torch import load_file, save_file

        wp = WeightPaths(**{k: v for k, v in self.cfg.weights.items() if k in {f.name for f in fields(WeightPaths)}})
        if wp.singer_net or wp.hallo_net:
            kind = load_pretrained(net, wp)
            return [wp.singer_net if kind == "singer" else wp.hallo_net]  # type: ignore[list-item]
        base = self.out / "base_net.safetensors"
        if base.is_file():
            net.load_state_dict(load_file(str(base)))
        else:
            if wp.sd15_unet:
                load_pretrained(net, wp, "base")
            else:
                log.warning("no pretrained weights configured: training from a random initialisation")
            if self._is_main():
                with atomic_path(base) as tmp:
                    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        return [str(base)]

    def _is_main(self) -> bool:
        acc = getattr(self, "acc", None)
        return acc is None or acc.is_main_process

    def _n_frames(self, clip_id: str) -> int:
        from safetensors import safe_open

        with safe_open(str(self.cache.path(clip_id)), "pt") as f:
            return int(f.get_slice("latents").get_shape()[0])

    @staticmethod
    def _default_val(manifest: Path) -> Path:
        test = manifest.with_name("test.parquet")
        return test if test.is_file() else manifest

    @property
    def unwrapped(self) -> SingerNet:
        return self.acc.unwrap_model(self.net)

    # ---------------------------------------------------------------- batches
    def sample_batch(self) -> dict[str, Any]:
        """One training batch (drawn with the run's RNGs; pass it to :meth:`train_step`)."""
        from safetensors.torch import load_file

        d, net_cfg = self.cfg.data, self.unwrapped.cfg
        win, m = d.n_frames, net_cfg.n_motion_frames
        items = []
        for _ in range(self.tr.batch_size):
            cid = self.clip_ids[int(self.rng.integers(len(self.clip_ids)))]
            e = load_file(str(self.cache.path(cid)))
            t_total = e["latents"].shape[0]
            s = int(self.rng.integers(0, t_total - win + 1))
            at_start = s < m
            simulated = not at_start and self.rng.random() < self.tr.start_ratio
            if at_start or (simulated and self.tr.start_motion == "reference"):
                motion = e["ref_latent"][None].expand(m, -1, -1, -1)
            elif simulated:
                motion = self.start_latent[None].expand(m, -1, -1, -1)
            else:
                motion = e["latents"][s - m:s]
            items.append({
                "latents": e["latents"][s:s + win].permute(1, 0, 2, 3),
                "ref": torch.cat([e["ref_latent"][None], motion]),
                "audio": window_features(e["audio"], net_cfg.audio_window)[s:s + win],
                "face_emb": e["face_emb"],
                "region": e["face_region"][None].expand(3, -1, -1),
                "masks": torch.stack([e[k][None].expand(win, -1, -1) for k in ("full_mask", "face_mask", "lip_mask")]),
            })
        b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        b["ref"] = b["ref"].flatten(0, 1)
        b["uncond_img"], b["uncond_audio"] = cfg_dropout_case(self.tr, self.step)
        bs = b["latents"].shape[0]
        noise = torch.randn(b["latents"].shape, generator=self.gen)
        if self.tr.noise_offset:
            noise = noise + self.tr.noise_offset * torch.randn((bs, noise.shape[1], 1, 1, 1), generator=self.gen)
        b["noise"] = noise
        b["timesteps"] = torch.randint(0, self.noise_sched.config.num_train_timesteps, (bs,), generator=self.gen)
        return b

    def loss(self, b: dict[str, Any]) -> torch.Tensor:
        dev = self.acc.device
        sch = self.noise_sched
        lat, noise, t = b["latents"].to(dev), b["noise"].to(dev), b["timesteps"].to(dev)
        noisy = sch.add_noise(lat, noise, t)
        v_pred = sch.config.prediction_type == "v_prediction"
        target = sch.get_velocity(lat, noise, t) if v_pred else noise
        face_emb = b["face_emb"].to(dev)
        if b["uncond_img"] and self.tr.cfg_dropout == "buckets":
            face_emb = face_emb * 0  # the project's scheme drops the identity with the reference
        masks = b["masks"].to(dev)
        pred = self.net(noisy, t, b["ref"].to(dev), face_emb, b["audio"].to(dev), b["region"].to(dev),
                        masks[:, 0], masks[:, 1], masks[:, 2],
                        uncond_img_fwd=b["uncond_img"], uncond_audio_fwd=b["uncond_audio"],
                        keep_graph=self.tr.cfg_keep_graph)
        err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3, 4))
        if self.tr.snr_gamma is not None:
            ac = sch.alphas_cumprod.to(dev)[t]
            snr = ac / (1 - ac).clamp_min(1e-12)
            w = torch.minimum(snr, torch.full_like(snr, self.tr.snr_gamma))
            w = w / (snr + 1) if v_pred else w / snr.clamp_min(1e-8)
            err = err * w
        return err.mean()

    def train_step(self, b: dict[str, Any]) -> float:
        self.net.train()
        with self.acc.accumulate(self.net):
            loss = self.loss(b)
            self.acc.backward(loss)
            if self.acc.sync_gradients and self.tr.max_grad_norm:
                self.acc.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], self.tr.max_grad_norm)
            self.opt.step()
            self.lr_sched.step()
            self.opt.zero_grad(set_to_none=True)
        return float(self.acc.gather(loss.detach()[None]).mean())

    # ---------------------------------------------------------------- checkpoints
    def inference_config(self, ckpt_dir: Path) -> dict[str, Any]:
        def rel(p: str | None) -> str | None:
            return os.path.relpath(p, ckpt_dir) if p else None

        return {
            "model": self.unwrapped.cfg.to_dict(),
            "data": {**asdict(self.cfg.data), "identity_backend": self.identity_backend},
            "weights": {k: rel(v) for k, v in self.cfg.weights.items() if v},
            "net": [rel(f) for f in self.net_files] + ["trainable.safetensors"],
            "scheduler": dict(self.cfg.scheduler),
            # the unconditional branch that matches how this run dropped conditions, unless configured
            "inference": {"cfg_uncond": "release" if self.tr.cfg_dropout == "release" else "drop_reference",
                          **self.cfg.inference},
        }

    def _replica_states(self, weights: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Every process's weight digest and RNG states (a collective: all processes call it)."""
        from accelerate.utils import gather_object

        mine = {"digest": weights_digest(weights), "torch_cpu": torch.get_rng_state(),
                "generator": self.gen.get_state(), "numpy_rng": self.rng.bit_generator.state}
        states = gather_object([mine]) if self.acc.num_processes > 1 else [mine]
        digests = [st["digest"] for st in states]
        if len(set(digests)) > 1:
            raise ReplicaDivergenceError(f"step {self.step}: the {len(digests)} processes hold different trainable "
                                         f"weights (SHA-256 {', '.join(d[:12] for d in digests)})")
        return states

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint (main process) after checking that every process holds the same weights;
        each process's RNG states are saved so that a resumed run continues every stream exactly."""
        from safetensors.torch import save_file

        self.acc.wait_for_everyone()
        weights = _trainable_state(self.unwrapped)
        states = self._replica_states(weights)
        self.saved_step = self.step
        if not self.acc.is_main_process:
            return None
        root = self.out / "checkpoints"
        root.mkdir(exist_ok=True)
        final = root / f"{STEP_PREFIX}{self.step:08d}"
        cfg = self.inference_config(final)
        cfg["model"]["gradient_checkpointing"] = False
        rng: dict[str, torch.Tensor] = {"torch_cpu": states[0]["torch_cpu"], "generator": states[0]["generator"]}
        for r, st in enumerate(states[1:], 1):
            rng[f"torch_cpu.rank{r}"] = st["torch_cpu"]
            rng[f"generator.rank{r}"] = st["generator"]
        with atomic_path(final) as tmp:
            tmp.mkdir()
            save_file(weights, str(tmp / "trainable.safetensors"))
            torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
            save_file(rng, str(tmp / "rng.safetensors"))
            state = {"step": self.step, "last_loss": self.last_loss, "lr_scheduler": self.lr_sched.state_dict(),
                     "numpy_rng": states[0]["numpy_rng"], "numpy_rng_ranks": [st["numpy_rng"] for st in states],
                     "world_size": len(states), "weights_sha256": [st["digest"] for st in states],
                     "trainable": self.trainable_names}
            (tmp / "state.json").write_text(json.dumps(to_plain(state)))
            (tmp / CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
        for old in list_checkpoints(self.out)[: -max(1, self.tr.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
        return final

    def load_checkpoint(self, ckpt: Path) -> None:
        """Weights, optimiser, LR schedule, step and this process's RNG states (re-seeded from
        ``(seed, step, rank)`` when the checkpoint was written by a run with another process count)."""
        from safetensors.torch import load_file

        net = self.unwrapped
        sd = load_file(str(ckpt / "trainable.safetensors"))
        missing = set(self.trainable_names) - set(sd)
        if missing:
            raise UsageError(f"{ckpt}: trainable parameters missing: {sorted(missing)[:5]}")
        net.load_state_dict(sd, strict=False)
        self.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        state = json.loads((ckpt / "state.json").read_text())
        self.lr_sched.load_state_dict(state["lr_scheduler"])
        self.step = int(state["step"])
        self.saved_step = self.step
        self.last_loss = float(state.get("last_loss", math.nan))
        rank, world = self.acc.process_index, self.acc.num_processes
        saved_world = int(state.get("world_size", 1))
        if rank == 0 or saved_world == world:
            rng = load_file(str(ckpt / "rng.safetensors"))
            sfx = f".rank{rank}" if rank else ""
            torch.set_rng_state(rng["torch_cpu" + sfx])
            self.gen.set_state(rng["generator" + sfx])
            self.rng.bit_generator.state = state.get("numpy_rng_ranks", [state["numpy_rng"]])[rank]
        else:
            log.warning("%s was written by %d process(es), this run has %d: process %d re-seeds its data streams",
                        ckpt, saved_world, world, rank)
            self.rng = np.random.default_rng([self.tr.seed, self.step, rank])
            self.gen.manual_seed(self.tr.seed * 1000 + self.step * 7 + rank)
        log.info("resumed from %s (step %d)", ckpt, self.step)

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        from benchmark.metrics.base import Clip, MetricInputError
        from benchmark.metrics.lmd import lmd_clip
        from benchmark.metrics.psnr import psnr_clip
        from benchmark.metrics.ssim import ssim_clip
        from shv_toolkit.dataset import SHVDataset
        from singer_model.data import resize_frames

        ds = SHVDataset(self.val_manifest, frames="uint8", prefer_vocals=self.cfg.data.prefer_vocals)
        net = self.unwrapped
        net.eval()
        pipe = SingerPipeline(net, self.pre, self.cfg.scheduler, self.acc.device,
                              self.inference_config(self.out)["inference"])
        rows = []
        try:
            for row in ds.rows[: self.tr.val_clips]:
                n = min(int(row["n_frames"]), self.tr.val_frames)
                gt = resize_frames(ds.load_frames(row)[:n], self.cfg.data.size)
                audio, _, _ = ds.load_audio(row)
                gen = pipe.generate(gt[0], audio[: int(round(n / self.cfg.data.fps * self.cfg.data.sample_rate))],
                                    num_frames=n, seed=self.tr.seed, steps=self.tr.val_steps)
                try:
                    lmd = lmd_clip(Clip(gen, fps=self.cfg.data.fps), Clip(gt, fps=self.cfg.data.fps)).lmd
                except MetricInputError as e:
                    log.warning("validation LMD of %s not computable: %s", row["clip_id"], e)
                    lmd = math.nan
                rows.append((ssim_clip(gen, gt), psnr_clip(gen, gt), lmd))
        finally:
            self.pre.close()
            net.train()
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        res = {"ssim": float(np.nanmean(arr[:, 0])), "psnr": float(np.nanmean(arr[:, 1])),
               "lmd": float(np.nanmean(arr[:, 2])) if np.isfinite(arr[:, 2]).any() else math.nan}
        _append_csv(self.out / "val_log.csv", {"step": self.step, **res, "clips": len(rows)})
        return res

    # ---------------------------------------------------------------- loop
    def run(self, max_steps: int | None = None) -> TrainResult:
        from tqdm import tqdm

        total = int(max_steps if max_steps is not None else self.tr.max_steps)
        writer = _tensorboard(self.out) if self.acc.is_main_process else None
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and self.acc.is_main_process))
        while self.step < total:
            t0 = time.perf_counter()
            batch = self.sample_batch()
            loss = self.train_step(batch)
            self.step += 1
            self.last_loss = loss
            dt = time.perf_counter() - t0
            lr = float(self.lr_sched.get_last_lr()[0])
            sps = self.tr.batch_size * self.acc.num_processes / dt
            if self.acc.is_main_process:
                _append_csv(self.out / "train_log.csv", {"step": self.step, "loss": loss, "lr": lr,
                                                         "step_time_s": dt, "samples_per_s": sps,
                                                         "uncond_img": int(batch["uncond_img"]),
                                                         "uncond_audio": int(batch["uncond_audio"])})
                if writer is not None:
                    writer.add_scalar("loss", loss, self.step)
                    writer.add_scalar("lr", lr, self.step)
                    writer.add_scalar("samples_per_s", sps, self.step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if self.tr.checkpoint_every and self.step % self.tr.checkpoint_every == 0:
                self.save_checkpoint()
            if self.tr.validate_every and self.step % self.tr.validate_every == 0 and self.acc.is_main_process:
                res = self.validate()
                log.info("validation at step %d: %s", self.step, res)
        bar.close()
        if self.saved_step != self.step:
            self.save_checkpoint()
        if writer is not None:
            writer.close()
        self.acc.wait_for_everyone()  # the main process has written the last checkpoint
        last = self.out / "checkpoints" / f"{STEP_PREFIX}{self.saved_step:08d}" if self.saved_step is not None else None
        return TrainResult(self.step, self.last_loss, last)


@torch.no_grad()
def _grey_latent(vae: torch.nn.Module, size: int) -> torch.Tensor:
    """``[C, h, w]`` latent (mean, scaled) of a mid-grey ``size``-pixel frame: Hallo's zeroed motion frames."""
    p = next(vae.parameters())
    grey = torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype)
    return (vae.encode(grey).latent_dist.mean.float().cpu() * float(vae.config.scaling_factor))[0]


def _launched_without_accelerator() -> bool:
    """True for a multi-process launch (torchrun / accelerate: ``WORLD_SIZE`` > 1) on a host without a GPU:
    accelerate then needs ``cpu=True`` to join the processes over gloo; without it every process trains
    alone (no gradient averaging) and all of them write the same checkpoints."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    return not torch.accelerator.is_available()


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names and float32 bytes of ``state`` (sorted by name): equal digests = equal weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def train(cfg: TrainConfig, manifest: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
          max_steps: int | None = None, val_manifest: str | os.PathLike | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or continue with ``resume``) and return the final step, loss and checkpoint."""
    out = Path(out)
    if not resume and list_checkpoints(out):
        raise UsageError(f"{out} already holds checkpoints: pass --resume or use a new --out")
    remove_partials(out / "checkpoints")
    trainer = Trainer(cfg, manifest, out, val_manifest, progress)
    if resume:
        ckpts = list_checkpoints(out)
        if ckpts:
            trainer.load_checkpoint(ckpts[-1])
        else:
            log.info("--resume: no checkpoint in %s, starting at step 0", out)
    return trainer.run(max_steps)
