"""Analysis pass: ONE decode of a source feeds scene detection and face detection (on keyframes, refined
where they disagree)."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from shv_toolkit.config import FaceConfig, SceneConfig
from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError
from shv_toolkit.core.helpers import HelperCalls
from shv_toolkit.stages.faces import Detection, FaceDetector, detections_agree
from shv_toolkit.stages.scenes import Scene, SceneCutter, detection_size

log = logging.getLogger(__name__)


@dataclass
class SourceAnalysis:
    """What the analysis pass learnt about one source.

    * ``n_frames``: grid frames ``0 .. n_frames-1`` at ``fps`` (see :func:`media.iter_frames`).
    * ``width``/``height``: analysis frame size (downsized to ``SceneConfig.analysis_max_side``).
    * ``source_width``/``source_height``: displayed source size (after rotation); crops use these.
    * ``scenes``: all scenes, covering ``[0, n_frames)``.
    * ``detections``: grid frame -> faces, for every frame the detector ran on (see faces.py).
    * ``detect_stride``: the finest stride used (between disagreeing keyframes); ``seconds``: wall time.
    """

    path: str
    fps: float
    n_frames: int
    width: int
    height: int
    source_width: int
    source_height: int
    scenes: list[Scene]
    detections: dict[int, list[Detection]] = field(default_factory=dict)
    detect_stride: int = 1
    seconds: float = 0.0


class _HeldFrame:
    """A decoded frame whose analysis RGB is made only if the face detector runs on it, on the detector's
    thread with that thread's reformatter (most frames only feed the scene cutter)."""

    __slots__ = ("frame", "max_side", "reformatter")

    def __init__(self, frame: media.SourceFrame, max_side: int, reformatter: VideoReformatter) -> None:
        self.frame, self.max_side, self.reformatter = frame, max_side, reformatter

    def rgb(self) -> np.ndarray:
        return self.frame.rgb(self.max_side, reformatter=self.reformatter)


_Frame = np.ndarray | _HeldFrame


class _KeyframeDetection:
    """Which frames the detector runs on: every keyframe (``k % key == 0``, the first and the last frame),
    and the ``k % stride == 0`` frames between two keyframes only when the two keyframes' faces disagree
    (:func:`detections_agree`). The frames of an undecided interval are held until both its keyframes'
    detections are known; at most ``max_open`` intervals wait, then the oldest is waited for."""

    def __init__(self, det: FaceDetector, calls: HelperCalls, stride: int, multiple: int, agree_iou: float,
                 max_open: int = 4) -> None:
        self.det, self.calls = det, calls
        self.stride, self.key = stride, stride * multiple
        self.agree_iou = agree_iou
        self.max_open = max_open
        self.found: dict[int, list[Detection] | Future] = {}
        self.refined = 0  # intervals whose in-between frames were detected
        self._open: deque[tuple[int, int, list[tuple[int, _Frame]]]] = deque()
        self._between: list[tuple[int, _Frame]] = []
        self._last_key: int | None = None
        self._last: tuple[int, _Frame] | None = None  # the latest frame, unless a keyframe

    def push(self, k: int, frame: np.ndarray | _HeldFrame) -> None:
        """Grid frame ``k`` (analysis RGB, or a frame converted to it when detected), in order: detect it
        now, hold it, or let it go."""
        if self._last_key is None or k % self.key == 0:
            self._keyframe(k, frame)
        else:
            if k % self.stride == 0:
                self._between.append((k, frame))
            self._last = (k, frame)
        self._settle(wait=len(self._open) > self.max_open)

    def finish(self) -> dict[int, list[Detection]]:
        """Close the last interval at the last frame, decide every interval and return all detections."""
        if self._last is not None:
            k, frame = self._last
            self._between = [(j, f) for j, f in self._between if j != k]
            self._keyframe(k, frame)
        while self._open:
            self._settle(wait=True)
        self.calls.join()
        return {k: HelperCalls.value(v) for k, v in self.found.items()}

    def _detect(self, frame: _Frame) -> list[Detection]:
        return self.det.detect(frame if isinstance(frame, np.ndarray) else frame.rgb())

    def _keyframe(self, k: int, frame: _Frame) -> None:
        self.found[k] = self.calls.submit(self._detect, frame)
        if self._last_key is not None and self._between:
            self._open.append((self._last_key, k, self._between))
        self._between, self._last_key, self._last = [], k, None

    def _settle(self, wait: bool) -> None:
        """Decide the oldest open intervals whose keyframes are detected (waiting for the oldest if ``wait``)."""
        while self._open:
            k0, k1, between = self._open[0]
            ends = (self.found[k0], self.found[k1])
            if not wait and any(isinstance(v, Future) and not v.done() for v in ends):
                return
            wait = False
            self._open.popleft()
            a, b = (HelperCalls.value(v) for v in ends)
            if not detections_agree(a, b, self.agree_iou):
                self.refined += 1
                for k, frame in between:
                    self.found[k] = self.calls.submit(self._detect, frame)


def analyse_source(
    path: str | os.PathLike,
    scene_cfg: SceneConfig,
    face_cfg: FaceConfig,
    fps: float = 25.0,
    progress: bool = True,
    threads: int = 0,
    decoder_threads: int = 0,
    damage: media.StreamDamage | None = None,
) -> SourceAnalysis:
    """Decode ``path`` once; detect scenes on every frame and faces on the frames
    :class:`_KeyframeDetection` picks: every ``detect_stride * keyframe_multiple``-th grid frame and the
    last, plus every ``detect_stride``-th frame between two keyframes whose faces disagree. Faces see
    frames at ``scene_cfg.analysis_max_side``; the scene cutter sees them at its detection size, scaled
    straight from the decoded frame when that is larger than the analysis size (converting every frame
    to the analysis size cost 1.8 ms per 720p frame; perf/RESULTS.md).

    ``threads`` > 0 runs face detection and scene cutting on two helper threads while this one decodes
    (mediapipe, OpenCV and NumPy release the GIL); the result is the same either way.
    ``decoder_threads``, ``damage`` (damaged video packets skipped): see :func:`media.iter_frames`.
    Raises :class:`shv_toolkit.core.errors.MediaError` for unreadable input.
    """
    t0 = time.perf_counter()
    info = media.probe(path)
    if not info.has_video or not info.width or not info.height:
        raise MediaError(f"no video stream: {Path(path).name}")
    stride = max(1, int(face_cfg.detect_stride))
    cutter = SceneCutter(scene_cfg, fps=fps)
    n = 0
    size = (0, 0)
    total = int(round(info.duration * fps)) or None
    helpers = 1 if threads > 0 else 0
    with FaceDetector(face_cfg) as det, HelperCalls(helpers, "shv-faces", max_pending=8) as detect, \
            HelperCalls(helpers, "shv-scenes", max_pending=8) as cut, tqdm(
                total=total, desc=f"analyse {Path(path).name[:30]}", unit="f", disable=not progress,
                leave=False) as bar:
        faces = _KeyframeDetection(det, detect, stride, max(1, int(face_cfg.keyframe_multiple)),
                                   float(face_cfg.keyframe_agree_iou))
        detect_rf = VideoReformatter()  # the face detector's thread converts the frames it detects
        max_side = scene_cfg.analysis_max_side
        small, direct = (0, 0), False
        for k, sf in media.iter_source_frames(path, fps=fps, decoder_threads=decoder_threads, damage=damage):
            if n == 0:
                size = media.analysis_size(*sf.display_size, max_side)
                small, direct = detection_size(*size), size != sf.display_size
            if not direct:  # analysed as shown: RGB for both (PySceneDetect's own downscale of it)
                frame = sf.rgb(max_side)
                faces.push(k, frame)
                cut.submit(cutter.push, k, frame)
            else:  # larger: the cutter's small frame straight from the decoded one, RGB only where detected
                faces.push(k, _HeldFrame(sf, max_side, detect_rf))
                cut.submit(cutter.push_detection_frame, k, sf.small_bgr(*small))
            n = k + 1
            bar.update(1)
        detections = faces.finish()
        cut.join()
    scenes = cutter.finish(n)
    dt = time.perf_counter() - t0
    log.info("analysed %s: %d frames, %d scenes, faces detected on %d frames (%d keyframe intervals "
             "refined), %.1f s", Path(path).name, n, len(scenes), len(detections), faces.refined, dt)
    return SourceAnalysis(
        path=str(path), fps=fps, n_frames=n, width=size[0], height=size[1],
        source_width=int(info.width), source_height=int(info.height), scenes=scenes,
        detections=detections, detect_stride=stride, seconds=dt,
    )
