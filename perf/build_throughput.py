"""shv-build throughput against plain FFmpeg on the same real video, measured in one run.

    python perf/build_throughput.py [--shared ../shared/media] [--seconds 40] [--height 720] [--repeat 3]
                                    [--sources N] [--vocals none|auto] [--threads N] [--workers N]
                                    [--decoder-threads N]

Makes a real singing source (franck.mp4's face with lena.wav's singing looped under it; 360x288, or
upscaled to ``--height`` pixels to give decoding its weight at the resolutions sites serve), then times:
  1. shv-build on it (all stages: analysis decode, scenes, faces, tracking, filters, vocals, encode);
  2. FFmpeg decoding the whole video alone (``ffmpeg -i src -f null -``);
  3. FFmpeg decode + crop + scale + encode of exactly the kept clips (one FFmpeg process per kept
     segment with the clip's median crop box, libx264 veryfast crf 18 at 512x512 - the minimum work
     any tool must do to produce those clips).
Prints wall times, CPU seconds (user + system, all threads) and the ratios; the target is
build / (3) <= 1.5 in wall time. Both sides get the same machine: by default shv-build as a user runs
it (one process, ``clips.threads`` auto: finished clips scored and encoded on one thread per core
while the main thread decodes) against FFmpeg with its default threads (x264 threads on every core).
``--threads 0`` runs shv-build on one core (everything in one thread) and then the baseline encodes
with ``-threads 1``. The CPU-seconds ratio does not depend on how many cores either side keeps busy.

``--workers N`` (N > 1): shv-build with N local worker processes (clip groups render in parallel).

``--sources N``: the list holds N sources (consecutive stretches of franck.mp4, each ``--seconds`` long) and
the baseline encodes the kept clips of all of them. A build pays some costs once however long its list
(imports, models, report.html); with one source they all fall on it, with N they are shared as in a
real build of many videos.

This machine's speed drifts by up to 20 % within minutes, so (1) and (3) run alternately ``--repeat``
times and the median of the per-pair ratios is the result. Each build runs in a fresh Python process
that imports ``shv_toolkit.build`` and then times ``run_build``: every build pays the same one-off
costs (mediapipe, scene detection, model loading) that a user's shv-build pays, and none is warm from
an earlier run; Python's own start-up and the import of the toolkit with NumPy, pandas and PyAV are
not counted (0.5-0.8 s, paid once per build however long the URL list).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd

from shv_toolkit.build import run_build
from shv_toolkit.build.units import TaskThreads
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from shv_toolkit.core.engines.base import usable_cores


def make_source(shared: Path, seconds: float, out: Path, height: int | None = None, start: float = 30.0) -> Path:
    frames = media.read_video(shared / "franck.mp4", fps=24.0, start=start, end=start + seconds)
    if height and height != frames.shape[1]:
        import cv2

        width = int(round(frames.shape[2] * height / frames.shape[1] / 2)) * 2
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames])
    song = media.read_audio(shared / "lena.wav", sample_rate=44100)
    n = int(frames.shape[0] / 24.0 * 44100)
    audio = np.tile(song, int(np.ceil(n / song.size)))[:n]
    return media.write_video(out, frames, fps=24.0, audio=audio, sample_rate=44100, crf=20)


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def ffmpeg(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)
    return time.perf_counter() - t


def baseline_encode(src: Path, clips: pd.DataFrame, fps: float, size: int, tmp: Path,
                    threads: str = "1") -> float:
    """Decode+crop+encode of the kept clips, one FFmpeg process per contiguous kept segment;
    ``threads`` "0" lets FFmpeg/x264 pick the thread count."""
    total = 0.0
    segments: list[list] = []  # [start, end, box] of runs of back-to-back kept clips
    for _, c in clips.sort_values("start_frame").iterrows():
        if segments and c["start_frame"] == segments[-1][1]:
            segments[-1][1] = c["end_frame"]
        else:
            segments.append([c["start_frame"], c["end_frame"], (c["crop_cx"], c["crop_cy"], c["crop_side"])])
    for i, (s, e, (cx, cy, side)) in enumerate(segments):
        side = int(side)
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        vf = (f"fps={fps},pad=iw+{2 * side}:ih+{2 * side}:{side}:{side},"
              f"crop={side}:{side}:{x0 + side}:{y0 + side},scale={size}:{size}")
        total += ffmpeg(["-ss", f"{s / fps:.3f}", "-t", f"{(e - s) / fps:.3f}", "-i", str(src), "-vf", vf,
                         "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                         "-threads", threads, "-an", str(tmp / f"seg{i}.mp4")])
    return total


def child_build(list_file: Path, out: Path, opts: dict) -> dict:
    """One timed shv-build, in this (fresh) process after importing shv_toolkit.build, as a user's
    process would be once Python and the toolkit are loaded: mediapipe, scene detection, models and
    everything the build needs beyond that are paid inside the timed part."""
    cfg = BuildConfig()
    cfg.vocals.backend = opts["vocals"]
    cfg.filters.mode = opts["filter_mode"]
    cfg.clips.threads = opts["threads"]
    cfg.clips.decoder_threads = opts["decoder_threads"]
    cores = max(1, usable_cores() // opts["workers"])
    c = cpu_seconds(resource.RUSAGE_SELF)
    c_kids = cpu_seconds(resource.RUSAGE_CHILDREN)  # worker processes, once they have exited
    t = time.perf_counter()
    engine = None
    if opts["workers"] > 1:
        from shv_toolkit.core.engines import make_engine

        engine = make_engine("local", workers=opts["workers"])
    try:
        summary = run_build(list_file, out, cfg, progress=False, engine=engine)
    finally:
        if engine is not None:
            engine.close()
    wall = time.perf_counter() - t
    cpu = cpu_seconds(resource.RUSAGE_SELF) - c + (cpu_seconds(resource.RUSAGE_CHILDREN) - c_kids)
    return {"wall": wall, "cpu": cpu, "stages": summary.stage_seconds,
            "helper_threads": TaskThreads.resolve(cfg.clips, cores).helpers}


def run_child(list_file: Path, out: Path, opts: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", str(list_file), str(out), json.dumps(opts)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--height", type=int, default=None, help="upscale the source to this height")
    ap.add_argument("--sources", type=int, default=1, help="sources in the list (consecutive stretches)")
    ap.add_argument("--filter-mode", default="filter", choices=["filter", "score-only"],
                    help="score-only keeps (and writes) every clip; an upscaled source fails the sharpness "
                         "filter, so use it with --height")
    ap.add_argument("--workers", type=int, default=1, help="shv-build local worker processes")
    ap.add_argument("--threads", type=int, default=None,
                    help="shv-build clips.threads (default: auto); 0 = one core, and the baseline gets one too")
    ap.add_argument("--decoder-threads", type=int, default=None,
                    help="shv-build clips.decoder_threads (default: auto); 0 = FFmpeg's choice")
    ap.add_argument("--vocals", default="none", choices=["none", "auto", "spleeter", "demucs"])
    ap.add_argument("--repeat", type=int, default=3,
                    help="build/baseline pairs, run alternately; the ratio of each pair and their median")
    ap.add_argument("--child", nargs=3, metavar=("LIST", "OUT", "OPTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        print(json.dumps(child_build(Path(args.child[0]), Path(args.child[1]), json.loads(args.child[2]))))
        return
    opts = {"vocals": args.vocals, "filter_mode": args.filter_mode, "threads": args.threads,
            "decoder_threads": args.decoder_threads, "workers": args.workers}
    one_core = args.workers == 1 and args.threads == 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if 30.0 + args.sources * args.seconds > media.probe(args.shared / "franck.mp4").duration:
            raise SystemExit(f"franck.mp4 is too short for {args.sources} sources of {args.seconds:g} s")
        srcs = [make_source(args.shared, args.seconds, tmp / f"source{i}.mp4", args.height,
                            start=30.0 + i * args.seconds) for i in range(args.sources)]
        (tmp / "list.txt").write_text("".join(f"{s}\n" for s in srcs))
        cfg = BuildConfig()
        info = media.probe(srcs[0])
        t_decode = sum(ffmpeg(["-i", str(s), "-f", "null", "-"]) for s in srcs)
        pairs = []
        kept = None
        for i in range(max(1, args.repeat)):
            b = run_child(tmp / "list.txt", tmp / "out", opts)
            got = pd.read_parquet(tmp / "out" / "clips.parquet").query("keep")
            url = pd.read_parquet(tmp / "out" / "sources.parquet").set_index("source_id")["url"]
            if got.empty:
                raise SystemExit("no clip was kept, nothing to compare (try --filter-mode score-only)")
            if kept is not None and list(got["clip_id"]) != list(kept["clip_id"]):
                raise SystemExit("two builds of the same source kept different clips")
            kept = got
            c = cpu_seconds(resource.RUSAGE_CHILDREN)
            t_base = sum(baseline_encode(Path(url[sid]), g, cfg.clips.fps, cfg.clips.size, tmp,
                                         threads="1" if one_core else "0") for sid, g in kept.groupby("source_id"))
            c_base = cpu_seconds(resource.RUSAGE_CHILDREN) - c
            pairs.append((b, t_base, c_base))
            if i == 0:
                print(f"source: {args.sources} x {args.seconds:.0f} s real video, {info.width}x{info.height}, "
                      f"{len(kept)} kept "
                      f"clips; vocals={args.vocals}; shv-build workers={args.workers}, helper threads="
                      f"{b['helper_threads']}; ffmpeg threads={'1' if one_core else 'auto'}")
                print(f"  ffmpeg decode alone        {t_decode:7.2f} s wall")
            print(f"  run {i + 1}: shv-build {b['wall']:6.2f} s wall, {b['cpu']:6.2f} s CPU "
                  f"(stages: {b['stages']})")
            print(f"         ffmpeg decode+crop+encode {t_base:6.2f} s wall, {c_base:6.2f} s CPU (kept clips only)"
                  f"   ratio {b['wall'] / t_base:.2f}x wall, {b['cpu'] / c_base:.2f}x CPU")
        walls = [b["wall"] / t for b, t, _ in pairs]
        cpus = [b["cpu"] / c for b, _, c in pairs]
        print(f"  ratio build / decode                 {np.median([b['wall'] for b, _, _ in pairs]) / t_decode:6.2f}x "
              "wall (median build)")
        print(f"  ratio build / (decode+crop+encode)   {np.median(walls):6.2f}x wall (target <= 1.5x), "
              f"{np.median(cpus):.2f}x CPU: median of {len(pairs)} pairs "
              f"(wall {min(walls):.2f}-{max(walls):.2f}x)")


if __name__ == "__main__":
    main()
