"""A reproducible 1080p still with three real faces, one of them large and turned (issue 16, part 5).

Built from the face photos in ``shared/media`` (obama.jpg, biden.jpg, einstein.jpg; see that folder's
README for their provenance): each photo is cropped around its face, scaled, and pasted into its own
rectangle of a 1920x1080 grey canvas, the large one (obama, face about 386 px wide) rotated in the
image plane by :data:`LARGE_ROLL_DEG` degrees. Every rectangle holds exactly one face, so the face a
backend returned is known from where its landmarks lie (:func:`face_at`), independently of any
detector. Used by ``perf/landmark_miss_rate.py`` and the landmark tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = (1080, 1920)  # (H, W)
LARGE_ROLL_DEG = 30.0


@dataclass(frozen=True)
class Placement:
    name: str
    file: str
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in the source photo
    scale: float
    at: tuple[int, int]  # (x, y) of the pasted patch's top-left corner on the canvas
    roll_deg: float = 0.0

    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the pasted patch on the canvas."""
        w = round((self.crop[2] - self.crop[0]) * self.scale)
        h = round((self.crop[3] - self.crop[1]) * self.scale)
        return self.at[0], self.at[1], self.at[0] + w, self.at[1] + h


# source face widths (dlib's box): obama 259 px, biden 311 px, einstein 87 px
PLACEMENTS: tuple[Placement, ...] = (
    Placement("obama", "obama.jpg", (196, 16, 796, 716), 386 / 259, (40, 18), LARGE_ROLL_DEG),
    Placement("biden", "biden.jpg", (339, 133, 850, 700), 0.48, (1100, 120)),
    Placement("einstein", "einstein.jpg", (312, 235, 499, 422), 1.7, (1520, 600)),
)
LARGEST = "obama"


def _rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def three_face_still(media: str | Path, roll_deg: float | None = None) -> np.ndarray:
    """The (1080, 1920, 3) uint8 RGB still (``roll_deg`` overrides the large face's rotation)."""
    import cv2

    canvas = np.full((*SIZE, 3), 128, dtype=np.uint8)
    for p in PLACEMENTS:
        x0, y0, x1, y1 = p.crop
        src = _rgb(Path(media) / p.file)[y0:y1, x0:x1]
        bx0, by0, bx1, by1 = p.box()
        patch = cv2.resize(src, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
        roll = p.roll_deg if roll_deg is None or p.name != LARGEST else roll_deg
        if roll:
            h, w = patch.shape[:2]
            rot = cv2.getRotationMatrix2D((w / 2, h / 2), roll, 1.0)
            patch = cv2.warpAffine(patch, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        canvas[by0:by1, bx0:bx1] = patch
    return canvas


def face_at(points: np.ndarray) -> str | None:
    """Name of the pasted face whose rectangle holds the centroid of ``points`` (68, 2), or None."""
    cx, cy = np.asarray(points, dtype=np.float64).mean(axis=0)
    for p in PLACEMENTS:
        x0, y0, x1, y1 = p.box()
        if x0 <= cx < x1 and y0 <= cy < y1:
            return p.name
    return None
