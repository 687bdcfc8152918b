"""Scaling of shv-build: wall time of the same build with 1 and 2 workers on each engine, in one run.

Workloads (real media):

* ``sample``: the bundled sample (5 short sources, manifests/sample/urls.txt): parallel over sources.
* ``long``: ONE long singing source (franck.mp4 picture + lena.wav singing, looped; ``--long-seconds``
  long): parallel only because its candidate clips are split into clip groups (render tasks).

For each workload the build runs four times, each with a fresh engine and output directory, as a
user's shv-build run would: ``--engine local`` with 1 worker (in-process) and 2 worker processes,
and ``--engine ray`` on a private local Ray instance with 1 and 2 CPUs. Wall times include worker
start-up and model loading in the workers (paid once per worker and build); the Ray instance's own
start-up is reported apart. Every run's manifests and clip files are checked to be identical to the
local 1-worker run. Usage::

    .venv/bin/python perf/scaling.py [--long-seconds 150] [--group-clips 24] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shv_toolkit.build import GROUP_CLIPS, run_build
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from shv_toolkit.core.engines import make_engine

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHV_SHARED_DIR", REPO.parent / "shared")) / "media"
MANIFESTS = ("sources", "clips", "train", "test")
RUNS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def make_long_source(out_dir: Path, seconds: float) -> Path:
    """A long singing-head source: franck.mp4 frames from 20 s, lena.wav singing looped under it."""
    frames = media.read_video(SHARED / "franck.mp4", fps=25.0, start=20.0, end=20.0 + seconds)
    voice = media.read_audio(SHARED / "lena.wav", sample_rate=44100)
    n = int(round(len(frames) / 25.0 * 44100))
    track = np.tile(voice, -(-n // len(voice)))[:n]
    path = out_dir / "franck_lena_long.mp4"
    media.write_video(path, frames, fps=25.0, audio=track, sample_rate=44100)
    lst = out_dir / "long.txt"
    lst.write_text(f"{path}\n")
    return lst


def _digests(out: Path) -> dict[str, str]:
    clips = pd.read_parquet(out / "clips.parquet")
    return {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest()
            for col in ("video_path", "audio_path", "vocals_path") for rel in clips[col].dropna()}


def _same(ref: Path, out: Path) -> bool:
    for name in MANIFESTS:
        a, b = pd.read_parquet(ref / f"{name}.parquet"), pd.read_parquet(out / f"{name}.parquet")
        if not a.equals(b):
            return False
    return _digests(ref) == _digests(out)


def _warm_up() -> None:
    """Import the heavy modules in the driver first, so the in-process run is not charged for them
    (worker processes pay their own imports and model loads: that is part of their cost)."""
    import torch  # noqa: F401

    from shv_toolkit.core.mediapipe_import import import_mediapipe
    from shv_toolkit.stages import analysis, filters, vocals  # noqa: F401

    import_mediapipe()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long-seconds", type=float, default=150.0, help="length of the long source (<= 180)")
    ap.add_argument("--group-clips", type=int, default=GROUP_CLIPS, help="clips per render task")
    ap.add_argument("--keep", type=Path, help="keep the outputs under this directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GLOG_minloglevel", "2")

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="shv-scaling-"))
    tmp.mkdir(parents=True, exist_ok=True)
    workloads = {"sample": REPO / "manifests" / "sample" / "urls.txt",
                 "long": make_long_source(tmp, args.long_seconds)}
    _warm_up()
    cfg = BuildConfig()
    wall: dict[tuple[str, str, int], float] = {}
    startup: dict[tuple[str, int], list[float]] = {}
    info: dict[str, str] = {}
    for wl, urls in workloads.items():
        for engine_name, workers in RUNS:
            t = time.perf_counter()
            engine = make_engine(engine_name, workers=workers)
            startup.setdefault((engine_name, workers), []).append(time.perf_counter() - t)
            out = tmp / f"{wl}-{engine_name}-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                t = time.perf_counter()
                summary = run_build(urls, out, cfg, progress=False, engine=engine, group_clips=args.group_clips)
                wall[(wl, engine_name, workers)] = time.perf_counter() - t
            finally:
                engine.close()
            if summary.exit_code() != 0:
                print(summary.render(), file=sys.stderr)
                return 1
            info[wl] = f"{summary.n_sources} source(s), {summary.clips_total} candidate clips, tasks: {summary.tasks}"
            print(f"{wl:6s} {engine_name:5s} workers={workers}: {wall[(wl, engine_name, workers)]:6.1f} s "
                  f"(1-min load average after: {os.getloadavg()[0]:.2f})", flush=True)

    print(f"\nshv-build scaling on {os.cpu_count()} CPU cores (wall time of run_build, engine start apart)")
    for wl in workloads:
        print(f"\n{wl}: {info[wl]}")
        ref = tmp / f"{wl}-local-1"
        base = wall[(wl, "local", 1)]
        print(f"  {'engine':6s} {'workers':>7s} {'wall s':>8s} {'speed-up vs 1 worker':>21s} "
              f"{'vs local 1':>11s} {'identical':>10s}")
        for engine_name, workers in RUNS:
            w = wall[(wl, engine_name, workers)]
            own1 = wall[(wl, engine_name, 1)]
            same = _same(ref, tmp / f"{wl}-{engine_name}-{workers}")
            print(f"  {engine_name:6s} {workers:7d} {w:8.1f} {own1 / w:20.2f}x {base / w:10.2f}x "
                  f"{'yes' if same else 'NO':>10s}")
    print("\nengine start-up, mean (s): " + ", ".join(
        f"{e} {n}: {sum(v) / len(v):.1f}" for (e, n), v in startup.items()))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
