"""SyncNet (Chung & Zisserman, "Out of time", ACCV-W 2016): the ``S`` network of syncnet_python.

A PyTorch re-implementation of the two-stream network that LSE-D / LSE-C are computed with. Its
state-dict names and shapes equal those of ``SyncNetModel.S`` in joonson/syncnet_python, so the
published ``syncnet_v2.model`` loads into it unchanged.

* Audio stream ``netcnnaud`` + ``netfcaud``: input ``(N, 1, 13, 20)`` = 13 MFCC x 20 frames
  (0.2 s at 100 Hz); six 2-D convolutions with batch norm, output a 1024-d embedding.
* Lip stream ``netcnnlip`` + ``netfclip``: input ``(N, 3, 5, 224, 224)`` = five 224x224 BGR frames
  (0.2 s at 25 fps), pixel values 0..255 (no normalisation); a 5-frame 3-D convolution followed by
  per-frame 2-D-like 3-D convolutions, output a 1024-d embedding.

The weights are not distributed with this project. ``load_syncnet`` finds ``syncnet_v2.model`` from an
explicit path, ``$SHV_SYNCNET_WEIGHTS`` or ``$SHV_WEIGHTS_DIR/syncnet_v2.model`` and loads it with
``torch.load(weights_only=True)``; without it, :class:`~shv_toolkit.core.errors.MissingWeightsError`.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from benchmark.weights import WeightSpec, resolve
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

SYNCNET_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"

SYNCNET_WEIGHTS = WeightSpec(
    name="syncnet_v2",
    filename="syncnet_v2.model",
    description="SyncNet weights (syncnet_python, used for LSE-D/LSE-C)",
    source=(f"the download script download_model.sh of github.com/joonson/syncnet_python ({SYNCNET_URL})"),
    env_var="SHV_SYNCNET_WEIGHTS",
)

EMBED_DIM = 1024  # num_layers_in_fc_layers of the reference


def _bn_relu_2d(ch: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(ch), nn.ReLU()]


def _bn_relu_3d(ch: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(ch), nn.ReLU()]


def _audio_trunk() -> nn.Sequential:
    """13x20 MFCC patch -> 512 channels at 1x1. Module indices match the reference state dict."""
    layers: list[nn.Module] = []
    # (in, out, kernel, padding, pooling after: (kernel, stride) or None)
    spec: list[tuple[int, int, tuple[int, int], tuple[int, int], tuple | None]] = [
        (1, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),
        (64, 192, (3, 3), (1, 1), ((3, 3), (1, 2))),
        (192, 384, (3, 3), (1, 1), None),
        (384, 256, (3, 3), (1, 1), None),
        (256, 256, (3, 3), (1, 1), ((3, 3), (2, 2))),
        (256, 512, (5, 4), (0, 0), None),
    ]
    for c_in, c_out, k, p, pool in spec:
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=k, stride=1, padding=p))
        layers += _bn_relu_2d(c_out)
        if pool is not None:
            layers.append(nn.MaxPool2d(kernel_size=pool[0], stride=pool[1]))
    return nn.Sequential(*layers)


def _lip_trunk() -> nn.Sequential:
    """5x224x224 BGR clip -> 512 channels at 1x1x1. Module indices match the reference state dict."""
    # (in, out, kernel, stride, padding, pooling after: (kernel, stride, padding) or None)
    spec: list[tuple[int, int, tuple, tuple, tuple, tuple | None]] = [
        (3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
        (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
        (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
        (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
        (256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
        (256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),
    ]
    layers: list[nn.Module] = []
    for c_in, c_out, k, s, p, pool in spec:
        layers.append(nn.Conv3d(c_in, c_out, kernel_size=k, stride=s, padding=p))
        layers += _bn_relu_3d(c_out)
        if pool is not None:
            layers.append(nn.MaxPool3d(kernel_size=pool[0], stride=pool[1], padding=pool[2]))
    return nn.Sequential(*layers)


def _fc_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """The ``S`` module of syncnet_python (same parameter names and shapes)."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _fc_head(embed_dim)
        self.netfclip = _fc_head(embed_dim)
        self.netcnnlip = _lip_trunk()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 13, 20)`` MFCC patches -> ``(N, embed_dim)``."""
        feat = self.netcnnaud(mfcc)
        return self.netfcaud(feat.flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 5, 224, 224)`` BGR 0..255 frame stacks -> ``(N, embed_dim)``."""
        feat = self.netcnnlip(frames)
        return self.netfclip(feat.flatten(1))

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_lip(frames), self.forward_aud(mfcc)


def _clean_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, one saved from ``SyncNetInstance`` (``__S__.`` prefix) or a
    ``{"state_dict": ...}`` wrapper; anything else is refused."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MissingWeightsError(f"{path}: not a SyncNet state dict (got {type(obj).__name__})")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        key = str(k)
        for prefix in ("__S__.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = v
    return out


def load_state_dict_into(model: SyncNet, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Copy ``state`` into ``model`` with strict names and shapes.

    Like the reference's ``loadParameters`` every tensor of the file must exist in the model with
    the same shape; the only keys the file may lack are BatchNorm ``num_batches_tracked`` counters
    (files written before PyTorch 0.4 have none; they are unused in eval mode).
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    bad_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(state) & set(own)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if unexpected or missing or bad_shape:
        raise MissingWeightsError(
            f"{source or 'state dict'} does not fit SyncNet S: unexpected keys {unexpected[:3]}, "
            f"missing keys {missing[:3]}, shape mismatches {bad_shape[:3]}"
        )
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def load_syncnet(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[SyncNet, Path, str]:
    """Find and load ``syncnet_v2.model``; returns ``(model in eval mode, path, sha256)``.

    Search order: ``path``, ``$SHV_SYNCNET_WEIGHTS``, ``$SHV_WEIGHTS_DIR/syncnet_v2.model``.
    Raises :class:`MissingWeightsError` naming the file and where to get it when none exists.
    """
    found = resolve(SYNCNET_WEIGHTS, path)
    try:
        obj = torch.load(found, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        # not a torch file, or a pickle with more than tensors (refused by weights_only)
        raise MissingWeightsError(
            f"cannot read SyncNet weights {found}: {exc.__class__.__name__}: {exc}; get "
            f"'{SYNCNET_WEIGHTS.filename}' from {SYNCNET_WEIGHTS.source}"
        ) from exc
    model = SyncNet()
    load_state_dict_into(model, _clean_state_dict(obj, found), str(found))
    model.eval().to(device)
    digest = sha256_file(found)
    log.info("loaded SyncNet weights %s (sha256 %s)", found, digest[:12])
    return model, found, digest
