"""face-alignment (Bulat & Tzimiropoulos' 2D-FAN-4) landmarks, only from local weight files.

``face_alignment.FaceAlignment`` downloads its weights on first use, which fails offline (and must not
happen in tests). This backend therefore checks that both files are already where face-alignment reads
them, the torch hub checkpoint directory ``torch.hub.get_dir()/checkpoints`` (by default
``~/.cache/torch/hub/checkpoints``; ``$TORCH_HOME/hub/checkpoints`` when ``TORCH_HOME`` is set):

* ``2DFAN4-11f355bf06.pth.tar`` -- the 2D-FAN-4 landmark network (face-alignment's ``models_urls``);
* ``s3fd-619a316812.pth`` -- its default S3FD face detector.

If either is missing, :class:`MissingWeightsError` names the missing files and that directory, before
face-alignment is constructed, so no download is ever attempted. With both present it runs
``FaceAlignment(LandmarksType.TWO_D, device="cpu", face_detector="sfd", compile=False,
flip_input=False)`` (no flip test-time augmentation, as LMDMeter; half the cost) with the detector
loaded from the local path, and keeps the largest detected face.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from benchmark.metrics.landmarks import LandmarkBackend, check_frame
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
SOURCE = (
    "the face-alignment project (github.com/1adrianb/face-alignment, models_urls in face_alignment/api.py)"
)


def checkpoint_dir() -> Path:
    """Where face-alignment looks for (and would download) its weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def require_weights(directory: Path | None = None) -> tuple[Path, Path]:
    """Paths of the FAN and S3FD files, or :class:`MissingWeightsError` naming what is missing."""
    directory = directory or checkpoint_dir()
    fan, s3fd = directory / FAN_FILE, directory / S3FD_FILE
    missing = [p.name for p in (fan, s3fd) if not p.is_file()]
    if missing:
        raise MissingWeightsError(
            f"face-alignment (FAN) landmark backend: missing {' and '.join(missing)} in {directory} "
            f"(the torch hub checkpoint directory; set TORCH_HOME to move it). Download them once from "
            f"{SOURCE} on a machine with internet and put them there; this toolkit never downloads weights."
        )
    return fan, s3fd


class FanBackend(LandmarkBackend):
    name = "fan"

    def __init__(self) -> None:
        fan, s3fd = require_weights()
        self._sha = hashlib.sha256(f"{sha256_file(fan)},{sha256_file(s3fd)}".encode()).hexdigest()
        import face_alignment

        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device="cpu",
            face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(s3fd)},
            compile=False,
            flip_input=False,
        )

    @property
    def weights_sha256(self) -> str:
        return self._sha

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        frame = check_frame(frame_rgb)
        boxes = self._fa.face_detector.detect_from_image(frame.copy())
        if len(boxes) == 0:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        pts = self._fa.get_landmarks_from_image(frame, detected_faces=[box])
        if not pts:
            return None
        return np.asarray(pts[0][:, :2], dtype=np.float64)
