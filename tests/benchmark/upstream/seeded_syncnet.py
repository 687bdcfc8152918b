"""Seeded random SyncNet ``S`` weights, the same on every machine (numpy's PCG64, not torch's RNG).

Used twice: outside the repository to write the weights file syncnet_python's ``loadParameters`` read
(``torch.save`` of the state dict), and by the tests to write the same file for the project's
``load_syncnet``. Names, shapes and order come from ``../shared/checkpoint-keys/syncnet_S.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

SEED = 20261204


def seeded_state(keys_json: str | Path, seed: int = SEED) -> dict[str, np.ndarray]:
    """Parameter name -> array: conv / linear weights N(0, 1/fan_in), biases N(0, 0.01^2), BatchNorm
    scale U(0.5, 1.5), shift N(0, 0.1^2), running mean N(0, 0.1^2), running var U(0.5, 2)."""
    shapes: dict[str, list[int]] = json.loads(Path(keys_json).read_text())
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        module = key.rsplit(".", 1)[0]
        is_bn = f"{module}.running_mean" in shapes
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(0, dtype=np.int64)
            continue
        if key.endswith("running_mean") or (is_bn and key.endswith(".bias")):
            a = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var"):
            a = rng.uniform(0.5, 2.0, shape)
        elif is_bn and key.endswith(".weight"):
            a = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".weight"):
            a = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        else:
            a = rng.normal(0.0, 0.01, shape)
        out[key] = a.astype(np.float32)
    return out


def state_digest(state: dict[str, np.ndarray]) -> str:
    """SHA-256 over names and raw bytes in order (independent of torch.save's container format)."""
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def save_torch(state: dict[str, np.ndarray], path: str | Path) -> Path:
    """``torch.save`` of the state dict as tensors (the format syncnet_python's loader reads)."""
    import torch

    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, str(path))
    return Path(path)
