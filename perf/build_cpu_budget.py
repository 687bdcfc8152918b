"""Where shv-build's CPU time goes on one source, part by part, beside FFmpeg's decode + crop + encode.

    python perf/build_cpu_budget.py [--shared ../shared/media] [--seconds 20] [--height 1080] [--repeat 2]

Makes the same source as ``perf/build_throughput.py`` (franck.mp4's face under lena.wav's singing,
upscaled to ``--height``), plans its clips once, then measures CPU seconds (user + system, every thread
of this process) of each part in isolation, with the build's default thread layout:

  decode                the source's video alone (FFmpeg's threads)
  decode + scene frames the same, each frame converted for the scene cutter (the analysis RGB itself when
                        the source is no larger than it, else a small frame scaled straight from it)
  analysis              the whole analysis pass: decode, conversion, scene cuts, face detection
  render                decode of the clips' spans, crops, x264, wav files (no scoring)
  render + scoring      the same with every filter score (what the build runs)
  ffmpeg baseline       FFmpeg decode + crop + encode of the same clips (one process per run of clips)

The build's wall time cannot fall below (analysis + render + scoring) / cores, however the work is
scheduled; the per-build costs (imports, models, report.html) come on top. Dividing by the baseline's
CPU gives the lowest ratio any schedule of the same work reaches on this machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_throughput import baseline_encode, make_source  # noqa: E402

from shv_toolkit.config import BuildConfig  # noqa: E402
from shv_toolkit.core import media  # noqa: E402
from shv_toolkit.stages.analysis import analyse_source  # noqa: E402
from shv_toolkit.stages.clips import plan_source, render_segment  # noqa: E402
from shv_toolkit.stages.filters import ClipScorer  # noqa: E402
from shv_toolkit.stages.scenes import detection_size  # noqa: E402


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--height", type=int, default=None, help="upscale the source to this height")
    ap.add_argument("--repeat", type=int, default=2, help="passes over every part; the lowest CPU of each")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(1)  # as the build sets it
    cfg = BuildConfig()
    cfg.filters.mode = "score-only"  # every clip rendered, as the baseline's
    helpers = 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = make_source(args.shared, args.seconds, tmp / "source.mp4", args.height)
        info = media.probe(src)
        audio = media.read_audio(src, sample_rate=cfg.clips.sample_rate)
        best: dict[str, float] = {}

        def part(name: str, fn, who: int = resource.RUSAGE_SELF) -> None:
            c = cpu_seconds(who)
            fn()
            best[name] = min(best.get(name, float("inf")), cpu_seconds(who) - c)

        def decode() -> None:
            for _ in media.iter_source_frames(src, fps=cfg.clips.fps):
                pass

        def decode_scene_frames() -> None:  # what the analysis' decoding thread does with every frame
            size = small = None
            for _, sf in media.iter_source_frames(src, fps=cfg.clips.fps):
                if size is None:
                    size = media.analysis_size(*sf.display_size, cfg.scenes.analysis_max_side)
                    small = detection_size(*size)
                if size == sf.display_size:
                    sf.rgb()
                else:
                    sf.small_bgr(*small)

        plan = None
        for _ in range(max(1, args.repeat)):
            part("decode", decode)
            part("decode + scene frames", decode_scene_frames)
            analysis = None

            def analyse() -> None:
                nonlocal analysis
                analysis = analyse_source(src, cfg.scenes, cfg.faces, fps=cfg.clips.fps, progress=False,
                                          threads=helpers, decoder_threads=0)

            part("analysis", analyse)
            plan = plan or plan_source(analysis, "src", cfg.faces, cfg.clips)
            out = tmp / "clips"
            for name, scorer in (("render", None),
                                 ("render + scoring", ClipScorer(cfg.filters, cfg.faces.crop_scale,
                                                                 thumbs_dir=tmp / "thumbs"))):
                shutil.rmtree(out, ignore_errors=True)
                part(name, lambda s=scorer, specs=plan.specs, o=out: render_segment(
                    src, specs, o, cfg.clips, audio, None, on_clip=s, threads=helpers, decoder_threads=1))
            kept = pd.DataFrame([{"start_frame": s.start_frame, "end_frame": s.end_frame,
                                  "crop_cx": float(s.boxes[:, 0].mean()), "crop_cy": float(s.boxes[:, 1].mean()),
                                  "crop_side": float(s.boxes[:, 2].mean())} for s in plan.specs])
            part("ffmpeg baseline", lambda k=kept: baseline_encode(src, k, cfg.clips.fps, cfg.clips.size, tmp,
                                                                    threads="0"),
                 who=resource.RUSAGE_CHILDREN)
    n = int(round(args.seconds * cfg.clips.fps))
    print(f"source: {args.seconds:g} s, {info.width}x{info.height}, {len(plan.specs)} clips; CPU seconds "
          f"(lowest of {args.repeat}), ms per source frame")
    for name, sec in best.items():
        print(f"  {name:24s} {sec:6.2f} s  {1000 * sec / n:6.2f} ms")
    work = best["analysis"] + best["render + scoring"]
    print(f"  build work / baseline: {work / best['ffmpeg baseline']:.2f}x CPU (the lowest wall ratio any "
          "schedule of it reaches when both keep every core busy)")


if __name__ == "__main__":
    main()
