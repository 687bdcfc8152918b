"""``singer``, ``hallo`` and the module-removal variants: the reference model in :mod:`singer_model`.

``--checkpoint`` is a checkpoint directory written by ``shv-train`` or a config YAML standing for one, such as
the release configs ``singer_model/configs/singer_release.yaml`` and ``hallo_release.yaml`` (the published
weights under ``pretrained_models/``)::

    shv-bench --method singer --checkpoint singer_model/configs/singer_release.yaml --manifest test.parquet --out bench
    shv-bench --method hallo  --checkpoint singer_model/configs/hallo_release.yaml  --manifest test.parquet --out bench

The bench uses three names of the model package, imported lazily when the method is checked::

    singer_model.infer.load_pipeline(checkpoint_dir, variant, device, dtype) -> SingerPipeline
    SingerPipeline.generate_batch([GenerationRequest(reference_image, audio, num_frames, seed), ...],
                                  fps=25, steps=None, guidance_scale=None) -> [(T, H, W, 3) uint8, ...]
    SingerPipeline.identity_backend -> "insightface" | "fallback"

Methods and what they are:

* ``singer``: the checkpoint's model as it is (MSM + SFM for a SINGER checkpoint; a checkpoint trained without
  a module, such as the retrained Table 3 ablations of ``singer_model/configs/singer_no_msm.yaml``, runs
  without it).
* ``hallo``: the model with both SINGER modules off: the published Hallo from ``hallo_release.yaml``.
* ``singer-minus-msm``, ``singer-minus-sfm``, ``singer-minus-both``: a trained SINGER with the module(s) removed
  at inference. These are NOT the paper's Table 3 ablations (the paper retrained without each module; train
  those with the ablation configs and evaluate them with ``--method singer``). ``singer-no-msm``,
  ``singer-no-sfm`` and ``singer-no-both`` are their old names, kept as aliases.

The driving audio follows the release: Hallo's and SINGER's inference separate the vocals from the song with
MDX-Net ``Kim_Vocal_2.onnx`` before wav2vec2. A checkpoint config that names ``weights.vocal_separator`` (the
release configs name ``pretrained_models/audio_separator/Kim_Vocal_2.onnx``) gets the clip's song and separates
it the same way (:class:`shv_toolkit.stages.vocals_mdx.MdxSeparator`, from the clip's 16 kHz track); any other
checkpoint is driven with the manifest's vocals stem (``driving_audio = "vocals"``). The bench's
``--driving-audio mix|vocals`` overrides either (with a separator configured, ``vocals`` hands it the stem,
which it separates again). The identity backend actually used (``insightface`` or the ``fallback``)
and the inference dtype are part of the method's fingerprint (cached clips are reused only under the same
ones), of :meth:`~_SingerBase.extras`, which the run summary lists, and of the leaderboard row (its
``identity_backend`` and ``dtype`` columns, from :meth:`~_SingerBase.row_info`).

Several clips can go through the net together: :meth:`~_SingerBase.generate_batch` runs window ``k`` of up to
``batch_clips`` clips in one forward (each clip's frames equal its frames alone, up to float summation order).
``batch_clips`` (``shv-bench --batch-clips N``, default 1) is also how many clips the bench's runner hands
:meth:`~_SingerBase.generate_batch` at once; a batch that fails is retried one clip at a time by the runner.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmark.methods import register
from benchmark.methods.base import ClipInput, Method, MethodUnavailableError, check_frames
from shv_toolkit.core.errors import MissingWeightsError, UsageError

log = logging.getLogger(__name__)

INFER_MODULE = "singer_model.infer"
#: the names the bench uses from INFER_MODULE
INFER_API: tuple[str, ...] = ("load_pipeline", "GenerationRequest", "resolve_dtype", "checkpoint_config",
                              "model_config_from")
#: method name -> singer_model.infer variant (which modules stay on)
VARIANTS: dict[str, str] = {
    "singer": "singer",
    "hallo": "singer-no-both",
    "singer-minus-msm": "singer-no-msm",
    "singer-minus-sfm": "singer-no-sfm",
    "singer-minus-both": "singer-no-both",
}
#: old method names -> current ones (aliases)
ALIASES: dict[str, str] = {"singer-no-msm": "singer-minus-msm", "singer-no-sfm": "singer-minus-sfm",
                           "singer-no-both": "singer-minus-both"}
CONFIG_SUFFIXES = (".yaml", ".yml")


class SingerUnavailableError(MethodUnavailableError):
    """The SINGER inference entry point or its checkpoint is not available."""


def load_infer_module() -> Any:
    """``singer_model.infer``, or :class:`SingerUnavailableError` saying what is missing."""
    try:
        module = importlib.import_module(INFER_MODULE)
    except ImportError as exc:
        raise SingerUnavailableError(
            f"the SINGER inference API is not available: cannot import {INFER_MODULE} ({exc}). shv-bench needs "
            f"{INFER_MODULE}.load_pipeline (the pipeline behind {INFER_MODULE}.generate_video); "
            "see benchmark/methods/singer.py"
        ) from exc
    absent = [name for name in INFER_API if not hasattr(module, name)]
    if absent:
        raise SingerUnavailableError(
            f"{INFER_MODULE} has no {', '.join(absent)}: the SINGER inference API (load_pipeline, "
            "SingerPipeline.generate_batch, generate_video) has not landed; see benchmark/methods/singer.py"
        )
    return module


def vocal_separator_path(checkpoint: str | Path) -> Path | None:
    """``weights.vocal_separator`` of a checkpoint's config (resolved against its folder), or None."""
    path = Path(checkpoint)
    if not (path.is_dir() or (path.suffix in CONFIG_SUFFIXES and path.is_file())):
        return None
    conf, base = load_infer_module().checkpoint_config(path)
    value = (conf.get("weights") or {}).get("vocal_separator")
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else (Path(base) / p).resolve()


class _SingerBase(Method):
    variant: ClassVar[str] = "singer"
    usage = ("--checkpoint DIR|CONFIG.yaml [--device cpu|cuda] [--dtype auto|bf16|fp16|fp32] [--seed 0] "
             "[--steps N] [--guidance-scale G] [--batch-clips N] [--compile]")
    #: the release separates the vocals before wav2vec2: the bench drives these methods with the vocals stem
    driving_audio: ClassVar[str] = "vocals"
    #: shv-bench passes --checkpoint, --device, --dtype, --seed, --steps, --guidance-scale (and --batch-clips)
    takes_checkpoint: ClassVar[bool] = True

    def __init__(self, checkpoint: str | Path | None = None, device: str | None = None, seed: int = 0,
                 steps: int | None = None, guidance_scale: float | None = None, dtype: str | None = None,
                 compile: str | None = None, **options: Any) -> None:
        super().__init__(**options)  # batch_clips (None: the default 1) is checked there
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.device = device or "cpu"
        self.seed = int(seed)
        self.dtype_option = dtype or "auto"
        self.compile_backend = compile  # torch.compile backend of the denoising forward ("inductor"), or eager
        # sampler settings are passed only when given, so the checkpoint's inference defaults apply
        self.sampler = {k: v for k, v in (("steps", steps), ("guidance_scale", guidance_scale)) if v is not None}
        self._infer: Any = None
        self._pipe: Any = None
        self._dtype: Any = None
        self._identity_backend: str | None = None  # kept after close(): the run summary is written after it
        self._separator: Any = None  # the release's vocal separator, when the checkpoint config names one

    # ------------------------------------------------------------------ set-up
    @classmethod
    def default_driving_audio(cls, checkpoint: str | Path | None = None) -> str:
        """``"mix"`` when the checkpoint config names the release's vocal separator (this method separates the
        song), else the manifest's vocals stem."""
        try:
            separated_here = bool(checkpoint) and vocal_separator_path(checkpoint) is not None
        except (MissingWeightsError, UsageError, SingerUnavailableError):  # check() reports these
            separated_here = False
        return "mix" if separated_here else cls.driving_audio

    def check(self) -> None:
        """Refuse a missing checkpoint (a directory or a config YAML), then load the pipeline once."""
        if self._pipe is not None:
            return
        if self.checkpoint is None:
            raise SingerUnavailableError(
                f"method {self.name} needs --checkpoint DIR or a config YAML (e.g. singer_model/configs/"
                f"{'hallo' if self.name == 'hallo' else 'singer'}_release.yaml)")
        is_config = self.checkpoint.suffix in CONFIG_SUFFIXES and self.checkpoint.is_file()
        if not (self.checkpoint.is_dir() or is_config):
            raise SingerUnavailableError(
                f"--checkpoint: not a checkpoint directory nor a config .yaml file: {self.checkpoint}")
        infer = load_infer_module()
        try:
            self._dtype = infer.resolve_dtype(self.dtype_option, self.device)
            self._warn_if_not_what_the_name_says(infer)
            extra = {"compile_backend": self.compile_backend} if self.compile_backend else {}
            self._pipe = infer.load_pipeline(self.checkpoint, self.variant, self.device, self._dtype, **extra)
        except (MissingWeightsError, UsageError) as exc:
            raise SingerUnavailableError(f"{self.name}: {exc}") from exc
        self._infer = infer
        self._identity_backend = str(self._pipe.identity_backend)
        separator = vocal_separator_path(self.checkpoint)
        if separator is not None:
            from shv_toolkit.stages.vocals_mdx import MdxSeparator

            try:
                self._separator = MdxSeparator(separator, device=self.device)
            except MissingWeightsError as exc:
                raise SingerUnavailableError(f"{self.name}: the release's vocal separator: {exc}") from exc
        log.info("%s: %s, identity backend %s, %s on %s", self.name, self.checkpoint, self.identity_backend,
                 self.dtype_name, self.device)

    def _warn_if_not_what_the_name_says(self, infer: Any) -> None:
        conf, _ = infer.checkpoint_config(self.checkpoint)
        cfg = infer.model_config_from(conf.get("model") or {})
        if self.name == "hallo" and (cfg.use_msm or cfg.use_sfm):
            log.warning("hallo: %s is a SINGER checkpoint (MSM/SFM); with both removed it is singer-minus-both, "
                        "not the published Hallo (singer_model/configs/hallo_release.yaml)", self.checkpoint)
        if self.name == "singer" and not (cfg.use_msm and cfg.use_sfm):
            log.info("singer: %s has MSM %s, SFM %s (a model trained without them, e.g. a Table 3 ablation)",
                     self.checkpoint, "on" if cfg.use_msm else "off", "on" if cfg.use_sfm else "off")

    @property
    def identity_backend(self) -> str | None:
        """The identity embedding actually used (``insightface`` or ``fallback``); None before :meth:`check`."""
        return self._identity_backend

    @property
    def vocal_separator(self) -> str | None:
        """The release's vocal separator this method runs on the song (name and version), or None."""
        return None if self._separator is None else f"{self._separator.name} ({self._separator.version})"

    @property
    def dtype_name(self) -> str | None:
        return None if self._dtype is None else str(self._dtype).removeprefix("torch.")

    def fingerprint(self) -> dict[str, Any]:
        if self._identity_backend is None and self.checkpoint is not None:
            self.check()
        return {
            "method": self.name,
            "variant": self.variant,
            "checkpoint": str(self.checkpoint.resolve()) if self.checkpoint else None,
            "seed": self.seed,
            "identity_backend": self.identity_backend,
            "dtype": self.dtype_name,
            "vocal_separator": self.vocal_separator,
            **self.sampler,
        }

    def extras(self) -> dict[str, Any]:
        """What a result row should carry about how it was generated."""
        return {"checkpoint": str(self.checkpoint) if self.checkpoint else None, "variant": self.variant,
                "identity_backend": self.identity_backend, "dtype": self.dtype_name,
                "vocal_separator": self.vocal_separator, "compile": self.compile_backend, "device": self.device,
                "seed": self.seed, **self.sampler}

    def row_info(self) -> dict[str, Any]:
        return {"identity_backend": self.identity_backend, "dtype": self.dtype_name}

    def input_notes(self, clip_ids: list[str]) -> dict[str, list[str]]:
        # the run summary (runs/<row>.json) and report list these: the settings a reader needs beside the row
        return {f"{self.name}: generated with": [f"{k}: {v}" for k, v in self.extras().items() if v is not None]}

    # ------------------------------------------------------------------ generation
    def generate(self, clip: ClipInput) -> np.ndarray:
        return self.generate_batch([clip])[0]

    def generate_batch(self, clips: list[ClipInput]) -> list[np.ndarray]:
        """Frames for several clips, ``batch_clips`` at a time through the net (see the module docstring)."""
        self.check()
        out: list[np.ndarray] = []
        for i in range(0, len(clips), self.batch_clips):
            group = clips[i:i + self.batch_clips]
            for c in group[1:]:
                if c.fps != group[0].fps:
                    raise UsageError(f"clips of one batch need one fps: {c.clip_id} {c.fps} vs {group[0].fps}")
            requests = [self._infer.GenerationRequest(c.reference_image, self._driving(c), c.num_frames, self.seed)
                        for c in group]
            frames = self._pipe.generate_batch(requests, fps=group[0].fps, **self.sampler)
            out += [check_frames(f, c, self.name) for f, c in zip(frames, group, strict=True)]
        return out

    def _driving(self, clip: ClipInput) -> np.ndarray:
        """The clip's audio as the release drives the net: its vocals separated first when configured."""
        if self._separator is None:
            return clip.audio
        from shv_toolkit.stages.vocals import OUTPUT_RATE

        if clip.sample_rate != OUTPUT_RATE:
            raise UsageError(f"clip {clip.clip_id}: audio at {clip.sample_rate} Hz, the separator gives {OUTPUT_RATE}")
        return self._separator.separate(clip.audio, clip.sample_rate)

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


@register
class Singer(_SingerBase):
    name = "singer"
    summary = ("SINGER: the checkpoint's model as it is; the published one: --checkpoint "
               "singer_model/configs/singer_release.yaml (a retrained Table 3 ablation: its own checkpoint)")
    variant = VARIANTS["singer"]


@register
class Hallo(_SingerBase):
    name = "hallo"
    summary = ("Hallo: the model with MSM and SFM off; the published one: --checkpoint "
               "singer_model/configs/hallo_release.yaml")
    variant = VARIANTS["hallo"]


@register
class SingerMinusMSM(_SingerBase):
    name = "singer-minus-msm"
    summary = ("a trained SINGER with MSM removed at inference (not Table 3, which retrains: "
               "singer_model/configs/singer_no_msm.yaml, then --method singer)")
    variant = VARIANTS["singer-minus-msm"]


@register
class SingerMinusSFM(_SingerBase):
    name = "singer-minus-sfm"
    summary = ("a trained SINGER with SFM removed at inference (not Table 3, which retrains: "
               "singer_model/configs/singer_no_sfm.yaml, then --method singer)")
    variant = VARIANTS["singer-minus-sfm"]


@register
class SingerMinusBoth(_SingerBase):
    name = "singer-minus-both"
    summary = ("a trained SINGER with MSM and SFM removed at inference (not Table 3, which retrains: "
               "singer_model/configs/singer_no_both.yaml, then --method singer)")
    variant = VARIANTS["singer-minus-both"]


def _alias(old: str, new: type[_SingerBase]) -> type[_SingerBase]:
    cls = type(new.__name__ + "Alias", (new,), {"name": old, "summary": f"old name of {new.name}", "usage": ""})
    return register(cls)  # type: ignore[arg-type]


for _old, _new in ALIASES.items():
    _alias(_old, {c.name: c for c in (SingerMinusMSM, SingerMinusSFM, SingerMinusBoth)}[_new])
