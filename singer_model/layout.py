"""Names and shapes the model reads from a published ``net.pth`` (``shv-train --dump-checkpoint-layout``).

The full-size model is built on PyTorch's meta device (no memory, no weights), its state dict converted to
the published naming with :func:`singer_model.checkpoints.to_published`, and written as the reference files
in ``checkpoint-keys/`` are: a JSON object ``{state_dict key: [shape...]}`` in state-dict order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from singer_model.checkpoints import to_published
from singer_model.config import SingerConfig
from singer_model.model import SingerNet

Kind = Literal["hallo", "singer"]
COMPONENTS = ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj", "audioembed")


def build_meta(kind: Kind, cfg: SingerConfig | None = None) -> SingerNet:
    """The model of ``kind`` on the meta device (full size unless ``cfg`` is given)."""
    if cfg is None:
        cfg = SingerConfig.hallo() if kind == "hallo" else SingerConfig.full()
    with torch.device("meta"):
        return SingerNet(cfg)


def dump_layout(kind: Kind, component: str | None = None, cfg: SingerConfig | None = None) -> dict[str, list[int]]:
    """``{published key: shape}`` of the whole ``net.pth`` or of one component (prefix stripped)."""
    if kind not in ("hallo", "singer"):
        raise ValueError(f"kind must be 'hallo' or 'singer', got {kind!r}")
    net = build_meta(kind, cfg)
    published = to_published(net.state_dict(), kind)
    layout = {k: list(v.shape) for k, v in published.items()}
    if component is None:
        return layout
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}")
    prefix = component + "."
    return {k[len(prefix):]: v for k, v in layout.items() if k.startswith(prefix)}


def write_layout(kind: Kind, out: str | Path, component: str | None = None) -> Path:
    """Write :func:`dump_layout` as JSON (indent 1, like the reference files)."""
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(dump_layout(kind, component), indent=1) + "\n")
    return p
