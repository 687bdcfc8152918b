"""What x264 spends on clips cut on the even crop grid from a frame's own 4:2:0 planes (shv-build),
through RGB, and through RGB on the former 1-pixel grid.

    python perf/crop_encode_cost.py [--shared ../shared/media] [--seconds 30] [--repeats 3]

Makes the real singing source of ``build_throughput.py``, plans its clips as shv-build does (analysis,
tracks, per-frame crop boxes), then cuts every planned clip three times from the same decoded frames:
  * planes: :func:`shv_toolkit.stages.crop.apply_crop_i420` on the frame's Y, U, V, even crop grid
    (what shv-build does);
  * rgb: the frame converted to RGB, :func:`~shv_toolkit.stages.crop.apply_crop`, back to I420, even
    grid (what shv-build does for 10-bit, 4:4:4, full-range, rotated and non-square-pixel sources);
  * rgb-1px: the same on the 1-pixel grid (the square whose centre is nearest to the box centre), as
    shv-build cut every clip before.
All sets go through the same single-threaded x264 (veryfast, crf 18), alternating, ``--repeats``
times; prints the encoder's CPU seconds and the bytes written per path and their ratios.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from shv_toolkit.stages import crop
from shv_toolkit.stages.analysis import analyse_source
from shv_toolkit.stages.clips import plan_source
from shv_toolkit.stages.crop import apply_crop, apply_crop_i420

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_throughput import make_source  # noqa: E402  (a sibling script)


def one_pixel_rect(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    """The former crop rectangle: the n x n square (any n) whose centre is nearest to (cx, cy)."""
    n = max(1, int(round(side)))
    return math.floor(cx - n / 2 + 0.5), math.floor(cy - n / 2 + 0.5), n


def cut_clips(src: Path, cfg: BuildConfig) -> dict[str, list[np.ndarray]]:
    analysis = analyse_source(src, cfg.scenes, cfg.faces, fps=cfg.clips.fps, progress=False)
    specs = plan_source(analysis, "src", cfg.faces, cfg.clips).specs
    if not specs:
        raise SystemExit("no clip planned")
    size = cfg.clips.size
    cut: dict[str, list[np.ndarray]] = {"planes": [], "rgb": []}
    by_frame = {}
    for s in specs:
        for i in range(s.n_frames):
            by_frame.setdefault(s.start_frame + i, []).append((s, i))
    bufs = {s.clip_id: {p: np.empty((s.n_frames, size * 3 // 2, size), np.uint8) for p in cut} for s in specs}
    for k, sf in media.iter_source_frames(src, fps=cfg.clips.fps):
        if k not in by_frame:
            continue
        planes = sf.yuv420()
        if planes is None:
            raise SystemExit("the source is not 8-bit limited-range 4:2:0")
        rgb = sf.rgb()
        for s, i in by_frame[k]:
            apply_crop_i420(planes, s.boxes[i], size, out=bufs[s.clip_id]["planes"][i])
            bufs[s.clip_id]["rgb"][i] = media.rgb_to_i420(apply_crop(rgb, s.boxes[i], size))
    for s in specs:
        for p in cut:
            cut[p].append(bufs[s.clip_id][p])
    return cut


def encode(clips: list[np.ndarray], out: Path, cfg: BuildConfig) -> tuple[float, int]:
    """Single-threaded x264 CPU seconds (this thread) and bytes written for ``clips``."""
    size, nbytes, cpu = cfg.clips.size, 0, 0.0
    for i, frames in enumerate(clips):
        path = out / f"{i}.mp4"
        t = time.thread_time()
        with media.VideoWriter(path, cfg.clips.fps, size, size, crf=cfg.clips.crf, preset=cfg.clips.preset) as wr:
            for f in frames:
                wr.write_i420(f)
        cpu += time.thread_time() - t
        nbytes += path.stat().st_size
    return cpu, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--height", type=int, default=None, help="upscale the source to this height")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = BuildConfig()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = make_source(args.shared, args.seconds, tmp / "source.mp4", args.height)
        cut = cut_clips(src, cfg)
        even_rect = crop._rect
        crop._rect = one_pixel_rect  # apply_crop looks it up at call time
        try:
            cut["rgb-1px"] = cut_clips(src, cfg)["rgb"]
        finally:
            crop._rect = even_rect
        cpu = {p: 0.0 for p in cut}
        nbytes = {}
        for _ in range(args.repeats):
            for p, clips in cut.items():
                c, nbytes[p] = encode(clips, tmp, cfg)
                cpu[p] += c
    n = len(cut["planes"])
    print(f"{n} planned clips of {args.seconds:.0f} s of real video, x264 veryfast crf {cfg.clips.crf}, one thread, "
          f"{args.repeats} alternating repeats")
    for p in cut:
        print(f"  {p:8s} x264 {cpu[p] / args.repeats:6.2f} s CPU   {nbytes[p] / 1e6:7.3f} MB")
    for a, b in (("planes", "rgb"), ("planes", "rgb-1px"), ("rgb", "rgb-1px")):
        print(f"  {a} / {b}: CPU {cpu[a] / cpu[b]:.3f}x, bytes {nbytes[a] / nbytes[b]:.3f}x")


if __name__ == "__main__":
    main()
