"""Analysis pass: ONE decode of a source feeds scene detection and face detection."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from shv_toolkit import media
from shv_toolkit.config import FaceConfig, SceneConfig
from shv_toolkit.errors import MediaError
from shv_toolkit.helpers import HelperCalls
from shv_toolkit.stages.faces import Detection, FaceDetector
from shv_toolkit.stages.scenes import Scene, SceneCutter

log = logging.getLogger(__name__)


@dataclass
class SourceAnalysis:
    """What the analysis pass learnt about one source.

    * ``n_frames``: grid frames ``0 .. n_frames-1`` at ``fps`` (see :func:`media.iter_frames`).
    * ``width``/``height``: analysis frame size (downsized to ``SceneConfig.analysis_max_side``).
    * ``source_width``/``source_height``: displayed source size (after rotation); crops use these.
    * ``scenes``: all scenes, covering ``[0, n_frames)``.
    * ``detections``: grid frame -> faces, for every frame the detector ran on (see faces.py).
    * ``detect_stride``: the stride used; ``seconds``: wall time of the pass.
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


def analyse_source(
    path: str | os.PathLike,
    scene_cfg: SceneConfig,
    face_cfg: FaceConfig,
    fps: float = 25.0,
    progress: bool = True,
    threads: int = 0,
    decoder_threads: int = 0,
) -> SourceAnalysis:
    """Decode ``path`` once at analysis resolution; detect scenes on every frame and faces on
    every ``face_cfg.detect_stride``-th grid frame (``k % stride == 0``) and on the last frame.

    ``threads`` > 0 runs face detection and scene cutting on two helper threads while this one decodes
    (mediapipe, OpenCV and NumPy release the GIL); the result is the same either way.
    ``decoder_threads``: see :func:`media.iter_frames`.
    Raises :class:`shv_toolkit.errors.MediaError` for unreadable input.
    """
    t0 = time.perf_counter()
    info = media.probe(path)
    if not info.has_video or not info.width or not info.height:
        raise MediaError(f"no video stream: {Path(path).name}")
    stride = max(1, int(face_cfg.detect_stride))
    cutter = SceneCutter(scene_cfg, fps=fps)
    found: dict[int, list[Detection] | Future] = {}
    n = 0
    size = (0, 0)
    total = int(round(info.duration * fps)) or None
    last_frame = None
    helpers = 1 if threads > 0 else 0
    with FaceDetector(face_cfg) as det, HelperCalls(helpers, "shv-faces", max_pending=8) as detect, \
            HelperCalls(helpers, "shv-scenes", max_pending=8) as cut, tqdm(
                total=total, desc=f"analyse {Path(path).name[:30]}", unit="f", disable=not progress,
                leave=False) as bar:
        for k, frame in media.iter_frames(path, fps=fps, max_side=scene_cfg.analysis_max_side,
                                             decoder_threads=decoder_threads):
            if n == 0:
                size = (frame.shape[1], frame.shape[0])
            if k % stride == 0:
                found[k] = detect.submit(det.detect, frame)
                last_frame = None
            else:
                last_frame = (k, frame)
            cut.submit(cutter.push, k, frame)
            n = k + 1
            bar.update(1)
        if last_frame is not None:  # close the last stride interval so tracks reach the end
            found[last_frame[0]] = detect.submit(det.detect, last_frame[1])
        detect.join()
        cut.join()
        detections = {k: HelperCalls.value(v) for k, v in found.items()}
    scenes = cutter.finish(n)
    dt = time.perf_counter() - t0
    log.info("analysed %s: %d frames, %d scenes, %.1f s", Path(path).name, n, len(scenes), dt)
    return SourceAnalysis(
        path=str(path), fps=fps, n_frames=n, width=size[0], height=size[1],
        source_width=int(info.width), source_height=int(info.height), scenes=scenes,
        detections=detections, detect_stride=stride, seconds=dt,
    )
