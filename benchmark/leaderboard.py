"""The leaderboard files in a bench output directory: CSV, Markdown, PNG chart and a self-contained HTML report.

``OUT/leaderboard.csv`` has one row per (method, source, dataset, protocol). Columns: the identity
(``method``, ``source`` = ``measured`` or ``paper``, ``dataset``, ``protocol``), the nine numbers in the
order of the SINGER paper's Table 1 (SSIM, PSNR, CPBD, FVD, LMD, LSE-D, LSE-C, Diversity, BAS), then
``LMD-face`` (full-face LMD, not in the paper) and ``PSNR-uint8-wrap`` (PSNR's uint8 wrap-around
variant, only under a protocol that asks for it: ``singer-paper``; never in the PSNR column), then
``<column>_lo`` and ``<column>_hi`` for every number (95 % percentile bootstrap interval over the test
clips, seeded: ``ci`` says how it was made; FVD's resamples clips and recomputes the distance from the
resampled window statistics), ``n_clips`` (test clips run), ``n_scored`` (clips every computed metric
scored), ``n_failed``, ``missing`` (why a cell is empty: weights not installed, metric not requested, too
few FVD windows...; a value is never replaced by 0), ``notes`` (partial coverage, clips a metric could
not score, warnings), ``protocol_fingerprint``, ``extractor_hashes`` (JSON: ``metric.weights -> sha256``),
``toolkit_version``, ``date`` (UTC), ``driving_audio``, ``manifest``, ``ci``, then how a model method
generated (empty for methods without a model: ``ground-truth``, ``static``, ``external``):
``identity_backend`` (``insightface`` or ``fallback``, the one actually used) and ``dtype`` (the inference
dtype, e.g. ``bfloat16``). ``table`` is set on paper rows only.

Re-running a method replaces its row (same method, dataset and protocol); other rows stay. Rows of
different protocols share the CSV (the ``protocol`` column marks them) but never one table of the
Markdown, PNG or HTML renderings: each protocol gets its own. Paper rows (``benchmark/paper_rows.csv``,
the SINGER paper's Tables 1, 3 and 5 cell for cell: numbers *reported in the SINGER paper, not
reproduced here*) appear only with ``with_paper_rows=True``, as separate rows with ``source=paper``,
``table`` and ``dataset`` set, in their own tables (one per paper table), never merged into measured
ones; beside them a small table sets the paper's ground-truth rows next to the user's own
``ground-truth`` rows measured under ``singer-paper`` (the only protocol on the paper's scales).

``OUT/per_clip.parquet``: one row per (method, dataset, protocol, clip) with every per-clip value (FVD is a
set-level distance and has none), the clip's errors (JSON ``{stage or metric: reason}``), and the videos
compared. ``OUT/runs/*.json``: each row's last run summary (failures, missing metrics, input problems,
timings), read by the HTML report.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import math
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.metrics.base import MetricResult
from benchmark.protocol import Protocol
from shv_toolkit.core.atomic import atomic_path, atomic_write_bytes, atomic_write_text


class BenchResult(typing.Protocol):
    """What the outputs need of a run (:class:`benchmark.runner.BenchResult` has it). Declared here, not
    imported, so this module never imports the runner: the runner imports this module, not the reverse."""

    config: Any  # BenchConfig: ``out``, ``with_paper_rows``, ``paper_rows``
    protocol: Protocol
    row_name: str
    row: dict[str, Any]
    records: list[dict[str, Any]]
    missing: dict[str, str]
    failures: dict[str, dict[str, str]]
    input_notes: dict[str, list[str]]
    n_computed: int
    n_cached: int
    seconds: float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    title: str  # CSV header (the paper's name)
    result: str  # MetricResult.name
    metric: str  # benchmark.metrics name that produces it
    higher_is_better: bool
    fmt: str  # number format in Markdown / HTML
    protocol_flag: str | None = None  # a Protocol attribute that must be true for the column to exist


TABLE1: tuple[Column, ...] = (
    Column("SSIM", "ssim", "ssim", True, "{:.4f}"),
    Column("PSNR", "psnr", "psnr", True, "{:.2f}"),
    Column("CPBD", "cpbd", "cpbd", True, "{:.4f}"),
    Column("FVD", "fvd", "fvd", False, "{:.2f}"),
    Column("LMD", "lmd", "lmd", False, "{:.3f}"),
    Column("LSE-D", "lse_d", "lse", False, "{:.3f}"),
    Column("LSE-C", "lse_c", "lse", True, "{:.3f}"),
    Column("Diversity", "diversity", "diversity", True, "{:.4f}"),
    Column("BAS", "bas", "bas", True, "{:.4f}"),
)
WRAP = Column("PSNR-uint8-wrap", "psnr_uint8_wrap", "psnr", True, "{:.2f}", "psnr_uint8_wrap")
EXTRA: tuple[Column, ...] = (Column("LMD-face", "lmd_face", "lmd", False, "{:.3f}"), WRAP)
VALUE_COLUMNS = TABLE1 + EXTRA
SHOWN_EXTRA: tuple[Column, ...] = (WRAP,)  # extra columns the tables show (when a row of the table has them)
CI_COLUMNS = [f"{c.title}_{end}" for c in VALUE_COLUMNS for end in ("lo", "hi")]
KEY = ["method", "source", "dataset", "protocol"]
META = [
    "n_clips", "n_scored", "n_failed", "missing", "notes", "protocol_fingerprint", "extractor_hashes",
    "toolkit_version", "date", "driving_audio", "manifest", "ci",
]
#: how the method generated (:meth:`benchmark.methods.base.Method.row_info`); after META, so older
#: consumers' columns keep their positions
METHOD_COLUMNS = ["identity_backend", "dtype"]
COLUMNS = KEY + ["table"] + [c.title for c in VALUE_COLUMNS] + CI_COLUMNS + META + METHOD_COLUMNS
GT_METHODS = ("ground-truth", "GT")  # the ground-truth row: shv-bench's method name, the paper's label
PER_CLIP_KEY = ["method", "dataset", "protocol"]
PAPER_NOTE = "reported in the SINGER paper, not reproduced here"
PAPER_ROWS = Path(__file__).with_name("paper_rows.csv")
UP, DOWN = "↑", "↓"


def arrow(col: Column) -> str:
    return UP if col.higher_is_better else DOWN


# ------------------------------------------------------------------------------------ rows


LANDMARK_RESULTS = ("lmd", "diversity", "bas")  # results whose extras carry frames_without_landmarks


def landmark_notes(results: dict[str, MetricResult], listed: int = 5) -> list[str]:
    """Notes on frames without landmarks per clip, from the first of LMD, Diversity, BAS that was
    scored (they share one landmark pass per clip): generated frames, and ground-truth frames from LMD."""
    counts: dict[str, dict[str, int]] = {}
    for name in LANDMARK_RESULTS:
        r = results.get(name)
        if r is not None and r.extras.get("frames_without_landmarks"):
            counts = r.extras["frames_without_landmarks"]
            break
    if not counts:
        return []
    notes = []
    for side in ("generated", "ground_truth"):
        per = {k: (c[side], c["frames"]) for k, c in counts.items() if side in c}
        if not per:
            continue
        n_missing, n_frames = sum(m for m, _ in per.values()), sum(f for _, f in per.values())
        label = side.replace("_", "-")
        if n_missing == 0:
            notes.append(f"frames without landmarks: none of {n_frames} {label} frames")
            continue
        bad = sorted(((k, m, f) for k, (m, f) in per.items() if m), key=lambda x: (-x[1], x[0]))
        clips = ", ".join(f"{k} {m}/{f}" for k, m, f in bad[:listed])
        more = f", {len(bad) - listed} more clip(s)" if len(bad) > listed else ""
        notes.append(f"frames without landmarks: {n_missing} of {n_frames} {label} frames ({clips}{more})")
    return notes


def make_row(
    *,
    method: str,
    dataset: str,
    protocol: Protocol,
    results: dict[str, MetricResult],
    requested: list[str],
    missing: dict[str, str],
    n_clips: int,
    failures: dict[str, dict[str, str]],
    extractor_hashes: dict[str, str],
    driving_audio: str,
    manifest: str,
    date: str,
    intervals: dict[str, tuple[float, float] | None] | None = None,
    ci: str | None = None,
    method_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One measured leaderboard row from a run's merged results. ``intervals`` maps a result name to its
    bootstrap interval (``<column>_lo`` / ``_hi``); ``ci`` says how they were made; ``method_info`` fills
    :data:`METHOD_COLUMNS` (the method's ``row_info()``; missing keys stay empty)."""
    from benchmark import __version__

    row: dict[str, Any] = {"method": method, "source": "measured", "dataset": dataset, "protocol": protocol.name}
    reasons: dict[str, list[str]] = {}
    notes: list[str] = []
    for col in VALUE_COLUMNS:
        r = results.get(col.result)
        value = None if r is None else r.value
        if col.protocol_flag and not getattr(protocol, col.protocol_flag, False):
            row[col.title] = None  # not a number of this protocol: an empty cell without a reason
            continue
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            row[col.title] = float(value)
            ci_ = (intervals or {}).get(col.result)
            if ci_ is not None:
                row[f"{col.title}_lo"], row[f"{col.title}_hi"] = float(ci_[0]), float(ci_[1])
            if r is not None and r.n_failed:
                bad = r.extras.get("failed_clips") or r.extras.get("clips_without_music_beats") or []
                notes.append(f"{col.title}: {r.n_failed} clip(s) without a finite value, left out"
                             + (f" ({', '.join(map(str, bad[:5]))})" if bad else ""))
            if r is not None and 0 < r.n_scored < n_clips and col.metric != "fvd":
                notes.append(f"{col.title} on {r.n_scored} of {n_clips} clips")
            if r is not None and isinstance(r.extras.get("warning"), str) and col in TABLE1:
                notes.append(f"{col.title}: {r.extras['warning']}")
            continue
        row[col.title] = None
        if col.metric not in requested:
            why = "not requested"
        elif col.metric in missing:
            why = missing[col.metric]
        elif r is not None and r.missing_reason:
            why = r.missing_reason
        elif r is not None and r.n_clips == 0:
            why = "failed on every clip (see per_clip.parquet)"
        else:
            why = "not computed"
        reasons.setdefault(why, []).append(col.title)
    row["missing"] = "; ".join(f"{', '.join(cols)}: {why}" for why, cols in reasons.items()) or None
    notes.extend(landmark_notes(results))
    row["notes"] = "; ".join(notes) or None
    n_failed = len(failures)
    row.update(
        ci=ci if intervals else None,
        n_clips=n_clips,
        n_scored=n_clips - n_failed,
        n_failed=n_failed,
        protocol_fingerprint=protocol.fingerprint(),
        extractor_hashes=json.dumps(dict(sorted(extractor_hashes.items()))),
        toolkit_version=__version__,
        date=date,
        driving_audio=driving_audio,
        manifest=manifest,
    )
    for c in METHOD_COLUMNS:
        v = (method_info or {}).get(c)
        row[c] = None if v is None else str(v)
    return {c: row.get(c) for c in COLUMNS}


def load_paper_rows(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Rows of ``paper_rows.csv`` (``#`` lines are comments) as leaderboard rows with ``source=paper``."""
    p = Path(path) if path else PAPER_ROWS
    df = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False)
    rows = []
    for rec in df.to_dict("records"):
        if not rec.get("method"):
            continue
        row: dict[str, Any] = {c: None for c in COLUMNS}
        table = str(rec.get("table", "")).strip()
        table = f"Table {table.removeprefix('Table').strip()}" if table else None
        row.update(method=rec["method"], source="paper", dataset=rec.get("dataset") or None, table=table,
                   protocol=f"SINGER paper {table}" if table else "SINGER paper")
        for col in TABLE1:
            v = rec.get(col.title, "")
            row[col.title] = float(v) if v not in ("", "-") else None
        row["notes"] = rec.get("note") or PAPER_NOTE
        rows.append(row)
    return rows


def read_leaderboard(out: str | os.PathLike) -> pd.DataFrame:
    p = Path(out) / "leaderboard.csv"
    if not p.is_file():
        return pd.DataFrame(columns=COLUMNS)
    text = KEY + ["table", "missing", "notes", "date", "manifest", "ci"] + METHOD_COLUMNS
    df = pd.read_csv(p, dtype={c: str for c in text})
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    return df[COLUMNS]


def upsert(df: pd.DataFrame, rows: list[dict[str, Any]], key: list[str] = KEY) -> pd.DataFrame:
    """Replace rows with the same key (in place, keeping the table's order) or append new ones."""
    df = df.copy()
    for row in rows:
        new = pd.DataFrame([row], columns=df.columns if len(df.columns) else list(row))
        match = np.ones(len(df), dtype=bool)
        for k in key:
            match &= (df[k].astype(str) == str(row[k])).to_numpy()
        if match.any():
            first = int(np.flatnonzero(match)[0])
            df = pd.concat([df.iloc[:first], new, df.iloc[first + 1:][~match[first + 1:]]], ignore_index=True)
        else:
            df = new if df.empty else pd.concat([df, new], ignore_index=True)
    return df


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Serialise read-modify-write of the shared files when several benches write one directory."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".leaderboard.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _per_clip_frame(result: BenchResult) -> pd.DataFrame:
    out = result.config.out.resolve()
    rows = []
    names = [c.result for c in VALUE_COLUMNS]
    for rec in result.records:
        values: dict[str, Any] = {}
        for entry in rec.get("metrics", {}).values():
            values.update(entry.get("values") or {})
        gen = rec.get("generated_video")
        if gen and Path(gen).resolve().is_relative_to(out):
            gen = str(Path(gen).resolve().relative_to(out))
        errors = rec.get("errors") or {}
        rows.append({
            "method": result.row_name,
            "dataset": result.row["dataset"],
            "protocol": result.protocol.name,
            "clip_id": rec["clip_id"],
            "status": "failed" if errors else "ok",
            "cache_hit": bool(rec.get("cache_hit")),
            "errors": json.dumps(errors) if errors else None,
            "generated_video": gen,
            "ground_truth_video": rec.get("ground_truth_video"),
            "seconds_total": rec.get("seconds", {}).get("total"),
            "seconds_generate": rec.get("seconds", {}).get("generate"),
            **{n: (None if values.get(n) is None else float(values[n])) for n in names if n != "fvd"},
        })
    cols = ["method", "dataset", "protocol", "clip_id", "status", "cache_hit", "errors", "generated_video",
            "ground_truth_video", "seconds_total", "seconds_generate"] + [n for n in names if n != "fvd"]
    return pd.DataFrame(rows, columns=cols)


def _run_file(out: Path, method: str, dataset: str, protocol: str) -> Path:
    from benchmark.methods.base import safe_name

    return out / "runs" / f"{safe_name(method)}__{safe_name(dataset)}__{safe_name(protocol)}.json"


def update_outputs(out: str | os.PathLike, result: BenchResult) -> None:
    """Replace ``result``'s row and per-clip rows, then rewrite every leaderboard file."""
    out = Path(out)
    with _locked(out):
        board = upsert(read_leaderboard(out), [result.row])
        board = board[board["source"] != "paper"]
        if result.config.with_paper_rows:
            board = upsert(board, load_paper_rows(result.config.paper_rows))
        pc_path = out / "per_clip.parquet"
        new = _per_clip_frame(result)
        if pc_path.is_file():
            old = pd.read_parquet(pc_path)
            same = np.ones(len(old), dtype=bool)
            for k, v in zip(PER_CLIP_KEY, (result.row_name, result.row["dataset"], result.protocol.name),
                            strict=True):
                same &= (old[k] == v).to_numpy()
            new = pd.concat([old[~same], new], ignore_index=True)
        with atomic_path(pc_path) as tmp:
            new.to_parquet(tmp, index=False)
        summary = run_summary(result)
        atomic_write_text(_run_file(out, result.row_name, result.row["dataset"], result.protocol.name),
                           json.dumps(summary, indent=2, default=str) + "\n")
        write_all(out, board)


def run_summary(result: BenchResult) -> dict[str, Any]:
    return {
        "method": result.row_name,
        "dataset": result.row["dataset"],
        "protocol": result.protocol.name,
        "protocol_settings": result.protocol.to_dict(),
        "row": result.row,
        "missing_metrics": result.missing,
        "failed_clips": result.failures,
        "input_notes": result.input_notes,
        "n_clips": len(result.records),
        "n_computed": result.n_computed,
        "n_cached": result.n_cached,
        "seconds": round(result.seconds, 3),
        "seconds_per_clip": {r["clip_id"]: round(r.get("seconds", {}).get("total", 0.0), 3) for r in result.records},
    }


def write_all(out: str | os.PathLike, board: pd.DataFrame) -> None:
    """Write leaderboard.csv, leaderboard.md, leaderboard.png and report.html from ``board``."""
    out = Path(out)
    atomic_write_text(out / "leaderboard.csv", board[COLUMNS].to_csv(index=False))
    atomic_write_text(out / "leaderboard.md", to_markdown(board))
    write_png(board, out / "leaderboard.png")
    atomic_write_text(out / "report.html", to_html(board, out))


# -------------------------------------------------------------------------------- renderings


def _cell(v: Any, col: Column) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return col.fmt.format(float(v))


def _records(board: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    sub = board[board["source"] == source]
    return [{k: (None if (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
            for r in sub.to_dict("records")]


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _interval(r: dict[str, Any], col: Column) -> tuple[float, float] | None:
    lo, hi = _num(r.get(f"{col.title}_lo")), _num(r.get(f"{col.title}_hi"))
    return None if lo is None or hi is None else (lo, hi)


@functools.lru_cache(maxsize=1)
def _printed() -> dict[tuple[str, str, str, str], str]:
    """The shipped paper file's cells as printed: (method, dataset, "Table n", column) -> "0.2400"."""
    df = pd.read_csv(PAPER_ROWS, comment="#", dtype=str, keep_default_na=False)
    return {(r["method"], r["dataset"], f"Table {r['table']}", c.title): r[c.title]
            for r in df.to_dict("records") for c in TABLE1 if r.get(c.title)}


def _paper_cell(v: Any, r: dict[str, Any] | None = None, col: Column | None = None) -> str:
    """A paper number as the paper prints it (``0.2400``, ``897.65``) when the shipped file has it,
    else the float's shortest form."""
    if _num(v) is None:
        return ""
    if r is not None and col is not None:
        printed = _printed().get((str(r.get("method")), str(r.get("dataset")), str(r.get("table")), col.title))
        if printed is not None and float(printed) == float(v):
            return printed
    return np.format_float_positional(float(v), trim="-")


def _cell_ci(r: dict[str, Any], col: Column) -> str:
    """A measured cell with its bootstrap interval: ``0.7443 [0.7012, 0.7801]``; a paper cell as printed."""
    if r.get("source") == "paper":
        return _paper_cell(r.get(col.title), r, col)
    text = _cell(r.get(col.title), col)
    ci = _interval(r, col)
    if text and ci is not None:
        text += f" [{col.fmt.format(ci[0])}, {col.fmt.format(ci[1])}]"
    return text


def _columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Table 1's columns, plus the shown extra columns some row of the table has (PSNR-uint8-wrap)."""
    return list(TABLE1) + [c for c in SHOWN_EXTRA if any(_num(r.get(c.title)) is not None for r in rows)]


def _by(rows: list[dict[str, Any]], *fields: str) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r.get(f)) for f in fields), []).append(r)
    return list(groups.items())


def table_groups(board: pd.DataFrame) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The tables every rendering shows, in order: ``(kind, title, rows)``. One table per protocol of the
    measured rows (rows of different protocols never share one), one per paper table and dataset, and,
    when paper rows are shown, the ground-truth comparison: the paper's GT rows beside the user's own
    ``ground-truth`` rows measured under ``singer-paper`` (the protocol on the paper's scales)."""
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    measured = _records(board, "measured")
    for (proto,), rows in _by(measured, "protocol"):
        out.append(("measured", f"Protocol {proto}", rows))
    paper = _records(board, "paper")
    for (table, dataset), rows in _by(paper, "table", "dataset"):
        out.append(("paper", f"SINGER paper {table}, {dataset}", rows))
    if paper:
        mine = [r for r in measured if r["method"] in GT_METHODS and str(r["protocol"]).startswith("singer-paper")]
        theirs = [r for r in paper if r["method"] in GT_METHODS]
        if theirs:
            out.append(("ground-truth", "Ground truth: your test set (measured, singer-paper) vs the paper's "
                        "(reported)", mine + theirs))
    return out


def _gt_note(rows: list[dict[str, Any]]) -> str | None:
    if any(r["source"] == "measured" for r in rows):
        return None
    return ("No ground-truth row of yours under protocol singer-paper yet: run `shv-bench --method ground-truth "
            "--protocol singer-paper ...` to see how far your test set is from the paper's.")


def _md_table(kind: str, rows: list[dict[str, Any]]) -> list[str]:
    cols = _columns(rows)
    if kind == "measured":
        head = ["Method", "Dataset", "Protocol", "Clips"]
    elif kind == "paper":
        head = ["Method", "Dataset", "Table"]
    else:
        head = ["Method", "Source", "Dataset", "Protocol / table", "Clips"]
    lines = ["| " + " | ".join(head + [f"{c.title}{arrow(c)}" for c in cols]) + " |",
             "|" + "|".join(["---"] * len(head) + ["---:"] * len(cols)) + "|"]
    for r in rows:
        clips = str(int(r["n_clips"] or 0)) if r["source"] == "measured" else ""
        if kind == "measured":
            cells = [str(r["method"]), str(r["dataset"]), str(r["protocol"]), clips]
        elif kind == "paper":
            cells = [str(r["method"]), str(r["dataset"]), str(r["table"])]
        else:
            where = str(r["protocol"]) if r["source"] == "measured" else str(r["table"])
            cells = [str(r["method"]), str(r["source"]), str(r["dataset"]), where, clips]
        cells += [_cell_ci(r, c) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ci_sentence(measured: list[dict[str, Any]]) -> str:
    methods = sorted({str(r["ci"]) for r in measured if r.get("ci")})
    if not methods:
        return ""
    return " Brackets: " + "; ".join(methods) + "."


def to_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as Markdown: one table per protocol of the measured rows, then (if present) the
    paper's rows, one table per paper table, and the ground-truth comparison."""
    measured = _records(board, "measured")
    text = [
        "Measured with shv-bench; ↑ higher is better, ↓ lower is better. An empty cell was not measured "
        "(reason below), never 0. Rows of different protocols are in different tables: their numbers are "
        "on different scales." + _ci_sentence(measured),
    ]
    groups = table_groups(board)
    for kind, title, rows in groups:
        if kind == "measured":
            text += ["", f"### {title}", "", *_md_table(kind, rows)]

    def grouped(field: str) -> list[str]:
        """One bullet per distinct text, naming every row it applies to."""
        by_text: dict[str, list[str]] = {}
        for r in measured:
            if r.get(field):
                by_text.setdefault(str(r[field]), []).append(f"{r['method']} ({r['dataset']}, {r['protocol']})")
        return [f"- {', '.join(rows)}: {why}" for why, rows in by_text.items()]

    failed = [(r["method"], r["dataset"], int(r["n_failed"])) for r in measured if r.get("n_failed")]
    if reasons := grouped("missing"):
        text += ["", "Empty cells:", *reasons]
    if failed:
        text += ["", "Failed clips (listed in per_clip.parquet and report.html):"]
        text += [f"- {m} ({d}): {n}" for m, d, n in failed]
    if notes := grouped("notes"):
        text += ["", "Notes:", *notes]
    paper_groups = [g for g in groups if g[0] != "measured"]
    if paper_groups:
        text += ["", "## Reported in the SINGER paper (not reproduced here)", "",
                 "Kept apart from the measured rows; an empty cell is one the paper leaves empty."]
        for kind, title, rows in paper_groups:
            text += ["", f"### {title}", "", *_md_table(kind, rows)]
            if kind == "ground-truth" and (note := _gt_note(rows)):
                text += ["", note]
    return "\n".join(text) + "\n"


def _row_label(r: dict[str, Any], multi: bool) -> str:
    label = str(r["method"]) + (" (paper)" if r["source"] == "paper" else "")
    if r["source"] == "paper" and multi:
        label += f"\n{r['table']}, {r['dataset']}"
    elif multi:
        label += f"\n{r['dataset']} / {r['protocol']}"
    return label


def _panel(fig: Any, rows: list[dict[str, Any]], title: str) -> None:
    """3 x 3 bar panels (one per Table 1 metric) of one table group, with bootstrap error bars."""
    multi = len({(r["dataset"], r["protocol"]) for r in rows}) > 1
    colours = [f"C{i % 10}" for i in range(len(rows))]
    fig.suptitle(title, fontsize=11)
    for k, col in enumerate(TABLE1):
        ax = fig.add_subplot(3, 3, k + 1)
        better = "higher" if col.higher_is_better else "lower"
        ax.set_title(f"{col.title} {arrow(col)} ({better} is better)", fontsize=10)
        xs = np.arange(len(rows))
        for i, r in enumerate(rows):
            v = _num(r.get(col.title))
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="grey")
                continue
            ci = _interval(r, col)
            yerr = None if ci is None else [[max(v - ci[0], 0.0)], [max(ci[1] - v, 0.0)]]
            ax.bar(i, v, color=colours[i], hatch="//" if r["source"] == "paper" else None,
                   edgecolor="black", linewidth=0.5, yerr=yerr, capsize=3 if yerr else 0,
                   error_kw={"elinewidth": 0.8})
            label = _paper_cell(v, r, col) if r["source"] == "paper" else _cell(v, col)
            ax.text(i, v if ci is None else max(v, ci[1]), label, ha="center", va="bottom", fontsize=7)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        if all(_num(r.get(col.title)) is None for r in rows):
            ax.set_yticks([])
        ax.set_xticks(xs)
        ax.set_xticklabels([_row_label(r, multi) for r in rows], rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)


def write_png(board: pd.DataFrame, path: Path) -> None:
    """Bars per metric (one panel each, arrow = which way is better), one bar per row, error bars = the
    bootstrap intervals; one block of panels per table (per protocol, per paper table: never mixed);
    paper rows hatched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = table_groups(board) or [("measured", "SHV leaderboard (no rows)", [])]
    fig = Figure(figsize=(13, 9.5 * len(groups)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    subs = fig.subfigures(len(groups), 1, squeeze=False)[:, 0]
    for sub, (kind, title, rows) in zip(subs, groups, strict=True):
        if kind == "measured":
            title = f"SHV leaderboard, measured: {title} (error bars: 95 % bootstrap over clips)"
        elif kind == "paper":
            title = f"{title}: hatched, reported in the SINGER paper, not reproduced"
        _panel(sub, rows, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------- HTML


def _jpeg_b64(frame: np.ndarray, side: int = 200) -> str:
    from PIL import Image

    img = Image.fromarray(frame)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def _middle_frame(path: Path, fps: float = 25.0) -> tuple[np.ndarray, int]:
    from shv_toolkit.core import media

    frames = media.read_video(path, fps=fps)
    k = len(frames) // 2
    return frames[k], k


def stills_html(out: Path, per_clip: pd.DataFrame, methods: list[str], max_clips: int = 3) -> str:
    """Side-by-side middle frames (ground truth, then each method) for the first clips of each dataset."""
    from shv_toolkit.core.errors import MediaError

    parts = []
    for (dataset, protocol), grp in per_clip.groupby(["dataset", "protocol"], sort=False):
        clips = list(dict.fromkeys(grp["clip_id"]))[:max_clips]
        present = [m for m in methods if m in set(grp["method"])]
        head = "".join(f"<th>{escape(m)}</th>" for m in ["ground truth", *present])
        body = []
        for cid in clips:
            rows = grp[grp["clip_id"] == cid]
            gt_path = next((p for p in rows["ground_truth_video"] if isinstance(p, str)), None)
            cells = []
            try:
                if gt_path is None:
                    raise MediaError("no ground-truth video")
                frame, k = _middle_frame(Path(gt_path))
                cells.append(f'<td><img alt="ground truth" src="data:image/jpeg;base64,{_jpeg_b64(frame)}"></td>')
            except MediaError as exc:
                k = None
                cells.append(f"<td class=err>{escape(str(exc))}</td>")
            for m in present:
                r = rows[rows["method"] == m]
                gen = r["generated_video"].iloc[0] if len(r) else None
                if not isinstance(gen, str):
                    err = r["errors"].iloc[0] if len(r) else "not run"
                    cells.append(f"<td class=err>no video<br>{escape(str(err))}</td>")
                    continue
                gp = Path(gen) if Path(gen).is_absolute() else out / gen
                try:
                    from shv_toolkit.core import media

                    frames = media.read_video(gp, fps=25.0)
                    idx = min(k if k is not None else len(frames) // 2, len(frames) - 1)
                    cells.append(f'<td><img alt="{escape(m)}" src="data:image/jpeg;base64,{_jpeg_b64(frames[idx])}"></td>')
                except MediaError as exc:
                    cells.append(f"<td class=err>unreadable: {escape(str(exc))}</td>")
            frame_note = f"frame {k}" if k is not None else ""
            body.append(f"<tr><th>{escape(cid[:13])}<br><small>{frame_note}</small></th>{''.join(cells)}</tr>")
        parts.append(
            f"<h3>{escape(str(dataset))} / {escape(str(protocol))}</h3>"
            f"<table class=stills><tr><th>clip</th>{head}</tr>{''.join(body)}</table>"
        )
    return "\n".join(parts)


def _table_html(kind: str, rows: list[dict[str, Any]]) -> str:
    """One table of :func:`table_groups` (same columns as the Markdown's); intervals in small print."""
    md = _md_table(kind, rows)
    head = [h.strip() for h in md[0].strip("|").split("|")]
    cols = _columns(rows)
    n_id = len(head) - len(cols)
    out = ["<table class=board><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r, line in zip(rows, md[2:], strict=True):
        ident = [c.strip() for c in line.strip("|").split("|")][:n_id]
        tds = [f"<td>{escape(c)}</td>" for c in ident]
        for c in cols:
            if r["source"] == "paper":
                v, ci = _paper_cell(r.get(c.title), r, c), None
            else:
                v, ci = _cell(r.get(c.title), c), _interval(r, c)
            if not v:
                tds.append("<td class=missing title='not measured'></td>")
                continue
            small = "" if ci is None else f"<br><small>[{c.fmt.format(ci[0])}, {c.fmt.format(ci[1])}]</small>"
            tds.append(f"<td class=num>{v}{small}</td>")
        out.append(f"<tr class={escape(str(r['source']))}>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "".join(out)


def to_html(board: pd.DataFrame, out: Path) -> str:
    """A self-contained HTML report: the tables, why cells are empty, failed clips, and stills."""
    from benchmark import __version__

    measured = _records(board, "measured")
    groups = table_groups(board)
    sections = [
        "<h1>SHV leaderboard</h1>",
        f"<p>shv-bench {escape(__version__)}. ↑ higher is better, ↓ lower is better. Empty cells were not "
        "measured (reasons below), never 0. Rows of different protocols are in different tables."
        + escape(_ci_sentence(measured)) + "</p>",
    ]
    for kind, title, rows in groups:
        if kind == "measured":
            sections += [f"<h2>{escape(title)}</h2>", _table_html(kind, rows)]
    paper_groups = [g for g in groups if g[0] != "measured"]
    if paper_groups:
        sections.append(f"<h2>Reported in the SINGER paper</h2><p>{escape(PAPER_NOTE)}; kept apart from the "
                        "measured rows.</p>")
        for kind, title, rows in paper_groups:
            sections += [f"<h3>{escape(title)}</h3>", _table_html(kind, rows)]
            if kind == "ground-truth" and (note := _gt_note(rows)):
                sections.append(f"<p>{escape(note)}</p>")
    issues = []
    for r in measured:
        if r.get("missing"):
            issues.append(f"<li><b>{escape(r['method'])}</b> ({escape(str(r['dataset']))}): empty cells: "
                          f"{escape(r['missing'])}</li>")
        if r.get("notes"):
            issues.append(f"<li><b>{escape(r['method'])}</b>: {escape(r['notes'])}</li>")
    for f in sorted((out / "runs").glob("*.json")) if (out / "runs").is_dir() else []:
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for cid, errs in (s.get("failed_clips") or {}).items():
            for where, why in errs.items():
                issues.append(f"<li><b>{escape(s['method'])}</b> clip {escape(cid)} [{escape(where)}]: "
                              f"{escape(str(why))}</li>")
        for title, items in (s.get("input_notes") or {}).items():
            issues.append(f"<li><b>{escape(s['method'])}</b>: {escape(title)}: "
                          + ", ".join(escape(str(i)) for i in items) + "</li>")
    if issues:
        sections += ["<h2>Missing values, failed clips, input problems</h2><ul>", *issues, "</ul>"]
    pc = out / "per_clip.parquet"
    if pc.is_file():
        per_clip = pd.read_parquet(pc)
        methods = [r["method"] for r in measured if r["method"] != "ground-truth"]
        sections += ["<h2>Stills: ground truth vs each method (middle frame)</h2>",
                     stills_html(out, per_clip, list(dict.fromkeys(methods)))]
    sections.append("<h2>Provenance</h2><table class=board><tr><th>Method</th><th>Protocol fingerprint</th>"
                    "<th>Extractor weights (SHA-256)</th><th>Toolkit</th><th>Date</th></tr>"
                    + "".join(f"<tr><td>{escape(str(r['method']))}</td><td>{escape(str(r['protocol_fingerprint']))}"
                              f"</td><td><code>{escape(str(r['extractor_hashes']))}</code></td><td>"
                              f"{escape(str(r['toolkit_version']))}</td><td>{escape(str(r['date']))}</td></tr>"
                              for r in measured) + "</table>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px}td.num{text-align:right;font-family:monospace}"
             "td.missing{background:#f4f4f4}td.err{color:#a00;font-size:small;max-width:200px}"
             "table.stills img{display:block}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>SHV leaderboard</title>"
            f"<style>{style}</style></head><body>" + "\n".join(sections) + "</body></html>\n")


__all__ = [
    "COLUMNS",
    "EXTRA",
    "KEY",
    "METHOD_COLUMNS",
    "PAPER_NOTE",
    "TABLE1",
    "load_paper_rows",
    "make_row",
    "read_leaderboard",
    "to_html",
    "to_markdown",
    "update_outputs",
    "upsert",
    "write_all",
    "write_png",
]
