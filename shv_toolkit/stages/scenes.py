"""Scene cuts with PySceneDetect 0.7, fed from the pipeline's single analysis decode.

PySceneDetect's :class:`~scenedetect.SceneManager` wants to own the decoder. shv-build decodes each
source exactly once for analysis, so :class:`SceneCutter` drives the detector classes directly
through their ``process_frame(timecode, frame_bgr)`` / ``post_process(timecode)`` API, exactly as
``SceneManager`` does (including its default downscale to an effective width of 256 pixels with
linear interpolation of the larger side), and turns the cut list into scenes. The analysis pass feeds
frames larger than its analysis size already downscaled by swscale's fast bilinear filter
(:meth:`SceneCutter.push_detection_frame`), which is closer to SceneManager's downscale of the full
frame than downscaling the analysis frame again (perf/RESULTS.md).

Scenes are half-open frame ranges ``[start, end)`` on the constant-rate grid of
:func:`shv_toolkit.core.media.iter_frames` (25 fps by default).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detector import SceneDetector
from scenedetect.detectors import (
    AdaptiveDetector,
    ContentDetector,
    HashDetector,
    HistogramDetector,
    ThresholdDetector,
)

from shv_toolkit.config import SceneConfig
from shv_toolkit.core import media

log = logging.getLogger(__name__)

#: PySceneDetect's SceneManager downscales frames so their larger side is about this many pixels.
DETECTION_WIDTH = 256


@dataclass(frozen=True)
class Scene:
    """Frames ``start <= k < end`` of the analysis grid form one shot."""

    start: int
    end: int

    @property
    def n_frames(self) -> int:
        return self.end - self.start


def make_detector(cfg: SceneConfig) -> SceneDetector:
    """The PySceneDetect detector named by ``cfg.detector``; ``cfg.threshold`` None keeps its default.

    The threshold means what it means for that detector: ``content`` the HSV+edge content score
    (default 27), ``adaptive`` the adaptive ratio (default 3), ``threshold`` the mean 8-bit
    intensity of a fade (default 12), ``hash`` the normalised hash distance (default 0.35),
    ``histogram`` one minus the luma histogram correlation (default 0.20).
    """
    msl = int(cfg.min_scene_len_frames)
    kw: dict = {"min_scene_len": msl}
    if cfg.detector == "content":
        if cfg.threshold is not None:
            kw["threshold"] = float(cfg.threshold)
        return ContentDetector(**kw)
    if cfg.detector == "adaptive":
        if cfg.threshold is not None:
            kw["adaptive_threshold"] = float(cfg.threshold)
        return AdaptiveDetector(**kw)
    if cfg.detector == "threshold":
        if cfg.threshold is not None:
            kw["threshold"] = float(cfg.threshold)
        return ThresholdDetector(**kw)
    if cfg.detector == "hash":
        if cfg.threshold is not None:
            kw["threshold"] = float(cfg.threshold)
        return HashDetector(**kw)
    if cfg.detector == "histogram":
        if cfg.threshold is not None:
            kw["threshold"] = float(cfg.threshold)
        return HistogramDetector(**kw)
    raise ValueError(f"unknown scene detector {cfg.detector!r}")


def detection_size(width: int, height: int) -> tuple[int, int]:
    """The size the detectors see frames of ``width`` x ``height`` at: the larger side downscaled to
    :data:`DETECTION_WIDTH`, as SceneManager's auto downscale does; unchanged when already within it."""
    if max(width, height) <= DETECTION_WIDTH:
        return width, height
    s = max(width, height) / DETECTION_WIDTH
    return max(1, round(width / s)), max(1, round(height / s))


class SceneCutter:
    """Incremental scene detection: :meth:`push` every frame in order, then :meth:`finish`."""

    def __init__(self, cfg: SceneConfig, fps: float = 25.0) -> None:
        self.cfg = cfg
        self.fps = float(fps)
        self._detector = make_detector(cfg)
        self._cuts: set[int] = set()
        self._first: int | None = None
        self._last: int | None = None
        self._size: tuple[int, int] = (0, 0)  # push(): detection size of the first frame

    def push(self, k: int, frame_rgb: np.ndarray) -> None:
        """Feed grid frame ``k`` (RGB uint8). Frames must come in increasing, consecutive order."""
        if self._first is None:
            h, w = frame_rgb.shape[:2]
            self._size = detection_size(w, h)
        img = frame_rgb
        if self._size != (frame_rgb.shape[1], frame_rgb.shape[0]):
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_LINEAR)
        self.push_detection_frame(k, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def push_detection_frame(self, k: int, bgr: np.ndarray) -> None:
        """Feed grid frame ``k`` already at :func:`detection_size` in BGR uint8 (what the detectors see)."""
        if self._last is not None and k != self._last + 1:
            raise ValueError(f"frames must be consecutive: got {k} after {self._last}")
        if self._first is None:
            self._first = k
        self._last = k
        for cut in self._detector.process_frame(FrameTimecode(k, fps=self.fps), bgr):
            self._cuts.add(int(cut.frame_num))

    def finish(self, n_frames: int | None = None) -> list[Scene]:
        """Scenes covering ``[first pushed frame, n_frames)`` (``n_frames`` defaults to last + 1)."""
        if self._first is None or self._last is None:
            return []
        for cut in self._detector.post_process(FrameTimecode(self._last, fps=self.fps)):
            self._cuts.add(int(cut.frame_num))
        end = self._last + 1 if n_frames is None else int(n_frames)
        bounds = [self._first] + sorted(c for c in self._cuts if self._first < c < end) + [end]
        return [Scene(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def usable_scenes(scenes: list[Scene], min_frames: int) -> tuple[list[Scene], list[Scene]]:
    """Split scenes into ``(kept, dropped)``: dropped ones are shorter than ``min_frames``."""
    kept = [s for s in scenes if s.n_frames >= min_frames]
    dropped = [s for s in scenes if s.n_frames < min_frames]
    return kept, dropped


def detect_scenes(
    path: str | os.PathLike, cfg: SceneConfig, fps: float = 25.0
) -> list[Scene]:
    """Convenience: decode ``path`` at ``cfg.analysis_max_side`` and return its scenes."""
    cutter = SceneCutter(cfg, fps=fps)
    n = 0
    for k, frame in media.iter_frames(path, fps=fps, max_side=cfg.analysis_max_side):
        cutter.push(k, frame)
        n = k + 1
    return cutter.finish(n)
