"""MediaPipe Face Mesh landmarks reduced to the 68-point iBUG scheme.

Model: the legacy ``mediapipe.solutions.face_mesh.FaceMesh`` graph with ``refine_landmarks=True``
(478 points: 468 mesh vertices + 10 iris points), whose models ship in the mediapipe 0.10.21 wheel
(``modules/face_landmark/face_landmark_with_attention.tflite`` and
``modules/face_detection/face_detection_short_range.tflite``), so it runs offline. ``detect`` treats
every frame as a still image (face detection each frame); ``detect_clip`` runs one tracking session per
clip (MediaPipe's video mode: the previous frame's landmarks give the next region of interest, the
detector runs again only when tracking is lost), which is the model's intended use on video and ~2x
faster. Coordinates are the mesh's normalised ``x, y`` times the frame width/height, minus 0.5 so they
are 0-based pixel positions like dlib's and the PTS ground truth's (a normalised 0 is the left edge of
pixel 0, i.e. pixel coordinate -0.5).

Several faces: the graph returns up to :data:`MAX_FACES` meshes (its own order, not by size); the
backend keeps the one with the largest bounding box of its 478 points, like the dlib backend keeps the
largest detector box (``max_num_faces=1`` would keep whichever face the detector ranked first).

iBUG-68 -> mesh index table (:data:`IBUG68_FROM_MESH`). The iBUG points are not mesh vertices, so the
table is fitted, not read off a drawing: for each of the 68 points it holds the mesh vertex whose
position is closest on average (distance / inter-ocular distance) to dlib's point on 200 real video
frames (franck, cap12_edit, WolfgangLanger, single_face from shared/media: talking, grimacing, crying,
laughing; reproduce with ``python perf/landmark_accuracy.py --fit-mapping``). The ground-truth images
(takeo, einstein) were not used, so their NME below is a held-out measurement. The fitted table has a
mean distance to dlib of 0.038 inter-ocular distances against 0.068 for a table of evenly spaced contour
vertices: the mesh's face oval lies outside the visible jaw line, and its lip contours are denser at
the corners than iBUG's, so "evenly spaced along the contour" picks the wrong vertices.

Mouth subset (the part LMD uses), image left = subject's right:

* outer lip 48-59: 61 (left corner), 39, 37, 0 (top centre), 267, 304, 291 (right corner),
  405, 314, 17 (bottom centre), 84, 181 -- all on FACEMESH_LIPS's outer contour except 304, a vertex
  just above it (0.034 vs 0.036 for the contour vertex 269);
* inner lip 60-67: 78 (inner left corner), 82, 13 (top centre), 312, 307 (inner right corner),
  317, 14 (bottom centre), 87 -- on the inner contour except 307 (0.028 vs 0.029 for 308).

Other regions: jaw 0-16 127 137 177 215 172 136 149 148 152 377 378 365 397 435 401 454 356; brows
70 63 105 66 107 | 336 296 334 293 383; nose 168 197 195 4 | 75 97 2 326 305; eyes 33 160 158 155 153
144 | 382 385 387 249 373 380.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import numpy as np

from benchmark.metrics.landmarks import N_POINTS, LandmarkBackend, check_frame
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

# fmt: off
IBUG68_FROM_MESH: tuple[int, ...] = (
    # jaw 0-16, image left ear -> chin (8) -> image right ear
    127, 137, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 454, 356,
    # brows 17-21 (image left, outer -> inner), 22-26 (inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 383,
    # nose bridge 27-30, nostril base 31-35
    168, 197, 195, 4, 75, 97, 2, 326, 305,
    # eyes 36-41 (image left), 42-47
    33, 160, 158, 155, 153, 144, 382, 385, 387, 249, 373, 380,
    # outer lip 48-59
    61, 39, 37, 0, 267, 304, 291, 405, 314, 17, 84, 181,
    # inner lip 60-67
    78, 82, 13, 312, 307, 317, 14, 87,
)
# fmt: on
assert len(IBUG68_FROM_MESH) == N_POINTS

MAX_FACES = 4  # meshes asked for per frame; the largest is kept

MODEL_FILES = (
    "modules/face_landmark/face_landmark_with_attention.tflite",
    "modules/face_detection/face_detection_short_range.tflite",
)


def _model_paths() -> list[Path]:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError("mediapipe is not installed (pip install mediapipe==0.10.21)")
    root = Path(next(iter(spec.submodule_search_locations)))
    paths = [root / f for f in MODEL_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MissingWeightsError(
            f"MediaPipe face models missing: {', '.join(missing)}; mediapipe 0.10.21's wheel ships them "
            "(later wheels do not): pip install mediapipe==0.10.21"
        )
    return paths


class MediaPipeBackend(LandmarkBackend):
    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        paths = _model_paths()
        digests = ",".join(sha256_file(p) for p in paths)
        self._sha = hashlib.sha256(digests.encode()).hexdigest()
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self._index = np.array(IBUG68_FROM_MESH)
        self._still = self._session(static=True)

    def _session(self, static: bool):
        from shv_toolkit.core.mediapipe_import import import_mediapipe

        return import_mediapipe().solutions.face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=MAX_FACES,
            refine_landmarks=True,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    @property
    def weights_sha256(self) -> str:
        return self._sha

    def mesh(self, frame_rgb: np.ndarray, session=None) -> np.ndarray | None:
        """All 478 mesh points of the largest face (bounding-box area), (478, 2) 0-based pixels, or None."""
        frame = check_frame(frame_rgb)
        res = (session or self._still).process(frame)
        if not res.multi_face_landmarks:
            return None
        h, w = frame.shape[:2]
        meshes = [
            np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in face.landmark], dtype=np.float64)
            for face in res.multi_face_landmarks
        ]
        return max(meshes, key=lambda m: float(np.prod(m.max(axis=0) - m.min(axis=0))))

    def to68(self, mesh: np.ndarray) -> np.ndarray:
        return mesh[self._index]

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        m = self.mesh(frame_rgb)
        return None if m is None else self.to68(m)

    def detect_clip(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), N_POINTS, 2), np.nan)
        session = self._session(static=False)
        try:
            for i, frame in enumerate(frames):
                m = self.mesh(frame, session)
                if m is not None:
                    out[i] = self.to68(m)
        finally:
            session.close()
        return out
