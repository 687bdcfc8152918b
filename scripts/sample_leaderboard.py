"""Make the README's leaderboard from the bundled real sample, end to end.

    .venv/bin/python scripts/sample_leaderboard.py [--out build/leaderboard]

1. shv-build the bundled sample into build/sample (skipped when already built: shv-build resumes);
2. write a degraded copy of every test clip (Gaussian blur, sigma 2 px, lossless crf 0 so that the
   encoder adds no block edges CPBD would count as sharp) as videos "generated elsewhere";
3. shv-bench ground-truth, static and external (the degraded copies) on build/sample/test.parquet;
4. print leaderboard.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from benchmark import bench_cli
from shv_toolkit import cli as build_cli
from shv_toolkit.core import media
from shv_toolkit.manifest.io import read_rows

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=REPO / "build" / "sample")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "leaderboard")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    code = build_cli.main(["--urls", str(REPO / "manifests/sample/urls.txt"), "--out", str(args.build),
                           "--no-progress"])
    if code not in (0, 1):
        return code
    manifest = args.build / "test.parquet"
    degraded = args.out / "degraded"
    for r in read_rows(manifest):
        src = args.build / r["video_path"]
        frames = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in media.read_video(src)])
        media.write_video(degraded / f"{r['clip_id']}.mp4", frames, audio=media.read_audio(src), crf=0)
    common = ["--manifest", str(manifest), "--out", str(args.out), "--dataset", "shv-sample", "--no-progress"]
    for method in (["--method", "ground-truth"], ["--method", "static"],
                   ["--method", "external", "--videos", str(degraded), "--name", "blurred-copy"]):
        bench_cli.main([*method, *common])
    print((args.out / "leaderboard.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
