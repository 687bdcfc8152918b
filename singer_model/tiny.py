"""Tiny, randomly initialised weight files in the real formats, for CPU tests and smoke runs.

``build_tiny_assets(dir)`` writes a tiny ``AutoencoderKL`` and a tiny ``Wav2Vec2Model`` with
``save_pretrained`` (the same folder formats as sd-vae-ft-mse and wav2vec2-base-960h), so every loader runs
its real code path. ``make_tiny_checkpoint(dir)`` adds a randomly initialised tiny SingerNet and a
``config.yaml``: a checkpoint directory :func:`singer_model.infer.generate_video` accepts. Its videos are
noise-like (the net is untrained); it exists to exercise the code, not to score.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from singer_model.config import SingerConfig
from singer_model.model import SingerNet

TINY_SIZE = 64


def build_tiny_assets(root: str | os.PathLike, seed: int = 0) -> tuple[Path, Path]:
    """``root/vae`` and ``root/wav2vec2`` (matching :meth:`SingerConfig.tiny`: 2 layers of width 8)."""
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    root = Path(root)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=TINY_SIZE,
    )
    vae.save_pretrained(root / "vae")
    cfg = SingerConfig.tiny()
    w2v = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=cfg.audio_feature_dim, num_hidden_layers=cfg.audio_layers, num_attention_heads=2,
        intermediate_size=16, conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    ))
    w2v.save_pretrained(root / "wav2vec2")
    return root / "vae", root / "wav2vec2"


def tiny_data_config(n_frames: int = 8) -> dict:
    return {"size": TINY_SIZE, "n_frames": n_frames, "fps": 25.0, "identity_backend": "fallback"}


def make_tiny_checkpoint(root: str | os.PathLike, seed: int = 0, n_frames: int = 8) -> Path:
    """A complete checkpoint directory with a random tiny SingerNet (zero-initialised layers perturbed so
    every module affects the output)."""
    from safetensors.torch import save_file

    root = Path(root)
    vae, w2v = build_tiny_assets(root / "assets", seed)
    torch.manual_seed(seed)
    net = SingerNet(SingerConfig.tiny())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        if net.msm is not None:  # MSM starts as the identity (zero last FC): move its gates away from 1
            net.msm.fc[2].weight.add_(torch.randn(net.msm.fc[2].weight.shape, generator=g) * 2.0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / "net.safetensors"))
    conf = {
        "model": net.cfg.to_dict(),
        "data": tiny_data_config(n_frames),
        "weights": {"vae": "assets/vae", "wav2vec2": "assets/wav2vec2"},
        "net": ["net.safetensors"],
        "inference": {"steps": 40, "guidance_scale": 3.5},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return root
