"""``shv-build``: a thin command line over :func:`shv_toolkit.build.run_build`.

Exit status: 0 every source produced clips; 1 some sources failed, produced no clip, or some input
lines were rejected (all recorded in sources.parquet and the log); 2 bad usage (arguments, config,
unreadable list file); 130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from shv_toolkit import __version__
from shv_toolkit.config import BuildConfig
from shv_toolkit.core.errors import InputListError, UsageError

log = logging.getLogger("shv_toolkit")

EXIT_OK, EXIT_SOURCES_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shv-build",
        description="Build an SHV-style singing-head dataset from a list of video URLs or local files: "
        "download, scene cut, face crop (scale 0.8), 2 s / 25 fps clips, vocals, quality filter, "
        "4:1 source-level split, Parquet manifests. Rerun the same command to resume.",
        epilog="Exit status: 0 all sources ok; 1 some sources failed or gave no clip; 2 bad usage; "
        "130 interrupted. --engine ray --ray-address HOST:PORT runs on an existing Ray cluster.",
    )
    p.add_argument("--urls", required=True, type=Path, help="list file: one http(s) URL or local path per line")
    p.add_argument("--out", required=True, type=Path, help="output directory (manifests, clips, logs)")
    p.add_argument("--config", type=Path, help="YAML file overriding BuildConfig fields (see README)")
    p.add_argument("--filter-mode", choices=["filter", "score-only"], help="score-only keeps every clip")
    p.add_argument("--vocals", choices=["auto", "demucs", "spleeter", "mdx", "none"], help="vocal separator")
    p.add_argument("--demucs-model-dir", help="local directory holding a demucs model (never downloaded)")
    p.add_argument("--mdx-model", help="local MDX-Net ONNX file for --vocals mdx (Hallo's Kim_Vocal_2.onnx)")
    p.add_argument("--device", help="torch device for separation (cpu, cuda, ...)")
    p.add_argument("--cookies", help="Netscape cookies file passed to yt-dlp")
    p.add_argument("--cookies-from-browser", help="browser to read cookies from (yt-dlp syntax)")
    p.add_argument("--rate-limit", help="download rate limit, e.g. 2M")
    p.add_argument("--sleep-interval", type=float, help="seconds to sleep before each download")
    p.add_argument("--max-filesize-mb", type=float, help="refuse larger sources")
    p.add_argument("--max-duration", type=float, help="refuse sources longer than this (seconds)")
    p.add_argument("--seed", type=int, help="split seed")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where tasks run: local worker processes (default) or Ray")
    p.add_argument("--workers", type=int, default=1,
                   help="local engine: worker processes (1 = in-process); ray engine without "
                   "--ray-address: CPUs of the private local Ray instance")
    p.add_argument("--ray-address", help="ray engine: 'auto' or host:port of a running Ray cluster "
                   "(default: start a private local instance on 127.0.0.1); --out must be on a "
                   "filesystem every node mounts at the same path")
    p.add_argument("--group-clips", type=int, default=None,
                   help="candidate clips per render task (default 24); fixed per source once planned")
    p.add_argument("--threads", type=int, default=None,
                   help="helper threads per task (clips scored and encoded while decoding goes on; face "
                   "detection beside decoding); default: CPU cores / workers; 0 = one core. Output is the same")
    p.add_argument("--retry-failed", action="store_true", help="process failed sources again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"shv-build {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    cfg = BuildConfig.from_yaml(args.config) if args.config else BuildConfig()
    overrides = {
        ("filters", "mode"): args.filter_mode,
        ("vocals", "backend"): args.vocals,
        ("vocals", "demucs_model_dir"): args.demucs_model_dir,
        ("vocals", "mdx_model_path"): args.mdx_model,
        ("vocals", "device"): args.device,
        ("download", "cookies"): args.cookies,
        ("download", "cookies_from_browser"): args.cookies_from_browser,
        ("download", "rate_limit"): args.rate_limit,
        ("download", "sleep_interval"): args.sleep_interval,
        ("download", "max_filesize_mb"): args.max_filesize_mb,
        ("download", "max_duration_s"): args.max_duration,
        ("split", "seed"): args.seed,
        ("clips", "threads"): args.threads,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    cfg.validate()
    return cfg


#: loggers whose warnings the console shows (others' records go to build.log only, errors excepted)
_OWN_LOGGERS = ("shv_toolkit", "benchmark", "singer_model")


def _own_or_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.name.split(".")[0] in _OWN_LOGGERS


def _setup_logging(out: Path, verbose: bool, console: TextIO) -> list[logging.Handler]:
    """Everything to ``out/logs/build.log``; to ``console`` our own warnings (``-v``: everything from
    DEBUG) and anyone's errors. Returns the handlers added to the root logger."""
    out.joinpath("logs").mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fh = logging.FileHandler(log_file(out), encoding="utf-8")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(console)
    level = logging.DEBUG if verbose else logging.WARNING
    sh.setLevel(level)
    # also as a filter: tqdm's logging redirect copies a console handler's filters but not its level
    sh.addFilter(lambda record: record.levelno >= level)
    if not verbose:
        sh.addFilter(_own_or_error)
    sh.setFormatter(fmt)
    for h in (fh, sh):
        root.addHandler(h)
    return [fh, sh]


def log_file(out: Path) -> Path:
    return out / "logs" / "build.log"


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[TextIO]:
    """Send file descriptor 2 to ``path`` (appending) while the block runs, and yield the console.

    Native libraries (mediapipe, TFLite, absl, glog, FFmpeg) write their log lines to fd 2 directly,
    between the progress bars; worker processes started inside the block inherit it. Python's own
    console output goes on: ``sys.stderr`` is, until the block ends, a stream on a duplicate of the
    original fd 2 (the yielded console), which tqdm, the logging console handler and our error messages
    write to. Third-party Python warnings go to the log through :func:`logging.captureWarnings`.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                        errors="backslashreplace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    old_stderr = sys.stderr
    try:
        os.dup2(fd, 2)
        os.close(fd)
        sys.stderr = console
        logging.captureWarnings(True)
        yield console
    finally:
        logging.captureWarnings(False)
        sys.stderr = old_stderr
        console.flush()
        os.dup2(saved, 2)
        os.close(saved)
        console.close()


def _quiet_native_logs() -> None:
    """Fewer glog/TFLite lines (what remains goes to build.log, see :func:`native_stderr_to`)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    _quiet_native_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.group_clips is not None and args.group_clips < 1:
            raise UsageError("--group-clips must be >= 1")
        if not args.urls.is_file():
            raise UsageError(f"URL list not found: {args.urls}")
        from shv_toolkit.stages.download import check_download_config

        check_download_config(cfg.download)  # a bad cookies file or rate limit is a usage error, not N failures
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"shv-build: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args.out.joinpath("logs").mkdir(parents=True, exist_ok=True)
    # third-party native logging -> build.log from here on, in this process and in its workers
    with native_stderr_to(log_file(args.out)) as console:
        handlers = _setup_logging(args.out, args.verbose, console)
        try:
            return _run(parser, args, cfg)
        finally:
            for h in handlers:
                logging.getLogger().removeHandler(h)
                h.close()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, cfg: BuildConfig) -> int:
    """The engine and the build, once the console and the log are set up; returns the exit status."""
    from shv_toolkit.build import GROUP_CLIPS, run_build
    from shv_toolkit.core.engines import make_engine

    try:
        engine = make_engine(args.engine, workers=args.workers, ray_address=args.ray_address,
                             log_level=logging.DEBUG if args.verbose else logging.INFO)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"shv-build: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as exc:
        print(f"shv-build: error: cannot start the {args.engine} engine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = run_build(
            args.urls, args.out, cfg, progress=not args.no_progress, retry_failed=args.retry_failed,
            engine=engine, group_clips=args.group_clips or GROUP_CLIPS,
        )
    except (InputListError, UsageError) as exc:
        print(f"shv-build: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("shv-build: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        engine.close()
    print(summary.render())
    return summary.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
