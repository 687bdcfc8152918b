"""What a benchmark method is: turn one test clip's reference frame and driving audio into a video.

The bench (:mod:`benchmark.runner`) hands every method a :class:`ClipInput` per test clip:

* ``reference_image``: the ground-truth clip's first frame (decoded at the protocol's fps), (H, W, 3) uint8 RGB;
* ``audio``: the driving audio, float32 mono at ``sample_rate`` (16 kHz), exactly as long as the clip
  (``round(num_frames / fps * sample_rate)`` samples). Which audio is used is the bench's
  ``driving_audio`` setting: ``"mix"`` (default: the clip's song audio, as the SINGER paper drives its
  model; methods that want vocals separate them themselves, as SINGER's Hallo pipeline does) or
  ``"vocals"`` (the manifest's separated vocals stem when the clip has one, else the mix);
* ``num_frames`` and ``fps`` (25): the video the method returns must have this many frames at this rate.

A method returns either frames ``(T, H, W, 3) uint8`` (the bench writes them to ``--out/videos/<row>/
<clip_id>.mp4`` with the driving audio) or the :class:`~pathlib.Path` of an existing video (ground truth,
videos generated elsewhere). Any size is accepted: metrics compare at the ground truth's size.

Batches: the bench hands a method the clips it must generate ``batch_clips`` at a time through
:meth:`Method.generate_batch` (one output per clip, in order). The default ``batch_clips`` is 1 and the
default ``generate_batch`` calls :meth:`Method.generate` per clip; a model that runs several clips per
forward (SINGER) overrides both. If a batch raises, the bench generates its clips one at a time, so one
bad clip fails only itself.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shv_toolkit.core.errors import ShvError, UsageError


class MethodError(ShvError):
    """A method failed on one clip; the bench records the reason for that clip and goes on."""


class MethodUnavailableError(ShvError):
    """A method cannot run at all (missing model code, checkpoint, option); the bench stops before any clip."""


class MissingVideoError(MethodError):
    """An external method has no video for a test clip."""


@dataclass
class ClipInput:
    """Everything a method may use to generate one clip (see the module docstring)."""

    clip_id: str
    reference_image: np.ndarray
    audio: np.ndarray
    sample_rate: int
    num_frames: int
    fps: float
    ground_truth_video: Path  # only the ground-truth method may look at it
    audio_source: str = "mix"  # "mix" or "vocals": where ``audio`` came from


MethodOutput = np.ndarray | Path


def safe_name(name: str) -> str:
    """A row name as a directory name (letters, digits, ``._-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not s:
        raise ValueError(f"cannot make a file name from {name!r}")
    return s


class Method(ABC):
    """One row of the leaderboard. Subclasses set ``name`` (the ``--method`` value), ``summary`` (one line
    for ``--list-methods``) and implement :meth:`generate`. Keyword options arrive from the command line
    (``videos``, ``name``, ``checkpoint``, ``device``, ``seed``, ``batch_clips``); a method takes the ones it
    needs."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: options the method needs from the command line, shown by ``--list-methods``
    usage: ClassVar[str] = ""
    #: True when the method produces frames the bench writes to ``--out/videos``
    generates: ClassVar[bool] = True
    #: clips the bench hands :meth:`generate_batch` at once (``--batch-clips`` overrides it per run)
    batch_clips: int = 1
    #: the audio the bench drives the method with unless ``--driving-audio`` says: "mix" or "vocals"
    driving_audio: ClassVar[str] = "mix"

    @classmethod
    def default_driving_audio(cls, checkpoint: str | Path | None = None) -> str:
        """The driving audio of a run without ``--driving-audio`` (a model may decide by its checkpoint)."""
        return cls.driving_audio

    def __init__(self, *, batch_clips: int | None = None, **options: Any) -> None:
        self.options = options
        if batch_clips is not None:
            if int(batch_clips) < 1:
                raise UsageError(f"batch_clips must be >= 1, got {batch_clips}")
            self.batch_clips = int(batch_clips)

    @property
    def row_name(self) -> str:
        """The leaderboard row's method column (``external`` uses ``--name``)."""
        return self.name

    def check(self) -> None:
        """Raise :class:`MethodUnavailableError` when the method cannot run at all (called once, before
        any clip, so a missing model fails fast with one clear message). Default: always available."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the method's output; a cached clip is reused only when they match."""
        return {"method": self.name}

    def clip_fingerprint(self, clip_id: str) -> dict[str, Any]:
        """Per-clip part of the fingerprint (e.g. the external video's checksum)."""
        return {}

    def input_notes(self, clip_ids: list[str]) -> dict[str, list[str]]:
        """Problems with the method's inputs as a whole, listed in the run summary and the report
        (e.g. external videos that match no test clip). ``{title: [items]}``."""
        return {}

    @abstractmethod
    def generate(self, clip: ClipInput) -> MethodOutput:
        """Frames ``(num_frames, H, W, 3) uint8`` or the path of a video of ``num_frames`` frames at ``fps``."""

    def generate_batch(self, clips: list[ClipInput]) -> list[MethodOutput]:
        """One output per clip, in order (see the module docstring). Default: :meth:`generate` per clip."""
        return [self.generate(c) for c in clips]

    def row_info(self) -> dict[str, Any]:
        """Leaderboard columns about how the method generated: ``identity_backend`` and ``dtype``
        (:data:`benchmark.leaderboard.METHOD_COLUMNS`). Default: none (empty cells)."""
        return {}

    def close(self) -> None:
        """Release models (called once at the end of a run). Default: nothing to release."""
        return None


def check_frames(frames: Any, clip: ClipInput, method: str) -> np.ndarray:
    """Validate a method's frames: (T, H, W, 3) uint8 with T == clip.num_frames."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise MethodError(
            f"{method} returned {type(frames).__name__} {getattr(frames, 'shape', '')} "
            f"{getattr(frames, 'dtype', '')}; expected (T, H, W, 3) uint8"
        )
    if frames.shape[0] != clip.num_frames:
        raise MethodError(
            f"{method} returned {frames.shape[0]} frames for clip {clip.clip_id}; expected {clip.num_frames}"
        )
    return frames
