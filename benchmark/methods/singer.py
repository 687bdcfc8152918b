"""``singer`` and its ablations: the reference model in :mod:`singer_model`, from a checkpoint directory.

The bench calls ONE function of the model package, imported lazily::

    singer_model.infer.generate_video(
        reference_image: np.ndarray,   # (H, W, 3) uint8 RGB, the clip's first frame
        audio: np.ndarray,             # float32 mono, 16 kHz, exactly num_frames / fps seconds long
        checkpoint_dir: str | Path,    # --checkpoint
        variant: str,                  # the method name: singer | singer-no-msm | singer-no-sfm | singer-no-both
        num_frames: int,
        fps: float = 25,
        seed: int = 0,
        device: str = "cpu",
    ) -> np.ndarray                    # (num_frames, H', W', 3) uint8 RGB

Until ``singer_model.infer`` provides it, every ``singer*`` method stops before the first clip with
:class:`SingerUnavailableError` naming what is missing; nothing is faked. Variants follow the paper's
Table 3 ablation: ``singer`` = MSM + SFM, ``singer-no-msm`` = SFM only, ``singer-no-sfm`` = MSM only,
``singer-no-both`` = neither (the Hallo backbone fine-tuned on SHV); ``singer_model.infer.VARIANTS`` maps
each name to ``SingerConfig(use_msm=..., use_sfm=...)``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.methods import register
from benchmark.methods.base import ClipInput, Method, MethodUnavailableError, check_frames

INFER_MODULE = "singer_model.infer"
INFER_FUNCTION = "generate_video"
#: the variants, named as singer_model.infer.VARIANTS names them (the method name is the variant)
VARIANTS: tuple[str, ...] = ("singer", "singer-no-msm", "singer-no-sfm", "singer-no-both")


class SingerUnavailableError(MethodUnavailableError):
    """The SINGER inference entry point or its checkpoint is not available."""


def load_generate_function() -> Callable[..., np.ndarray]:
    """``singer_model.infer.generate_video``, or :class:`SingerUnavailableError` saying what is missing."""
    try:
        module = importlib.import_module(INFER_MODULE)
    except ImportError as exc:
        raise SingerUnavailableError(
            f"the SINGER inference API is not available: cannot import {INFER_MODULE} ({exc}). "
            f"shv-bench needs {INFER_MODULE}.{INFER_FUNCTION}(reference_image, audio, checkpoint_dir, variant, "
            "num_frames, fps=25, seed=0, device='cpu') -> (T, H, W, 3) uint8; see benchmark/methods/singer.py"
        ) from exc
    fn = getattr(module, INFER_FUNCTION, None)
    if not callable(fn):
        raise SingerUnavailableError(
            f"{INFER_MODULE} has no function {INFER_FUNCTION}: the SINGER inference API has not landed yet "
            f"(expected {INFER_FUNCTION}(reference_image, audio, checkpoint_dir, variant, num_frames, fps=25, "
            "seed=0, device='cpu') -> (T, H, W, 3) uint8; see benchmark/methods/singer.py)"
        )
    params = inspect.signature(fn).parameters
    needed = ("reference_image", "audio", "checkpoint_dir", "variant", "num_frames")
    absent = [p for p in needed if p not in params and not any(
        q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values())]
    if absent:
        raise SingerUnavailableError(
            f"{INFER_MODULE}.{INFER_FUNCTION} does not take {', '.join(absent)}; the bench calls it with "
            f"keywords {', '.join(needed)}, fps, seed, device"
        )
    return fn


class _SingerBase(Method):
    variant: str = "singer"
    usage = "--checkpoint DIR [--device cpu|cuda] [--seed 0]"

    def __init__(self, checkpoint: str | Path | None = None, device: str | None = None, seed: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.device = device or "cpu"
        self.seed = int(seed)
        # sampler settings are passed only when given, so the checkpoint's inference defaults apply
        self.sampler = {k: v for k, v in (("steps", steps), ("guidance_scale", guidance_scale)) if v is not None}
        self._generate: Callable[..., np.ndarray] | None = None

    def check(self) -> None:
        if self.checkpoint is None:
            raise SingerUnavailableError(f"method {self.name} needs --checkpoint DIR (a SINGER checkpoint directory)")
        if not self.checkpoint.is_dir():
            raise SingerUnavailableError(f"--checkpoint: not a directory: {self.checkpoint}")
        self._generate = load_generate_function()

    def fingerprint(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "variant": self.variant,
            "checkpoint": str(self.checkpoint.resolve()) if self.checkpoint else None,
            "seed": self.seed,
            **self.sampler,
        }

    def generate(self, clip: ClipInput) -> np.ndarray:
        if self._generate is None:
            self.check()
        assert self._generate is not None
        frames = self._generate(
            reference_image=clip.reference_image,
            audio=clip.audio,
            checkpoint_dir=self.checkpoint,
            variant=self.variant,
            num_frames=clip.num_frames,
            fps=clip.fps,
            seed=self.seed,
            device=self.device,
            **self.sampler,
        )
        return check_frames(frames, clip, self.name)


@register
class Singer(_SingerBase):
    name = "singer"
    summary = "SINGER (MSM + SFM) from singer_model, needs --checkpoint DIR"
    variant = "singer"


@register
class SingerNoMSM(_SingerBase):
    name = "singer-no-msm"
    summary = "SINGER ablation without the Multi-scale Spectral Module (Table 3)"
    variant = "singer-no-msm"


@register
class SingerNoSFM(_SingerBase):
    name = "singer-no-sfm"
    summary = "SINGER ablation without the Self-adaptive Filter Module (Table 3)"
    variant = "singer-no-sfm"


@register
class SingerNoBoth(_SingerBase):
    name = "singer-no-both"
    summary = "SINGER ablation without MSM and SFM (the Hallo backbone trained on SHV)"
    variant = "singer-no-both"
