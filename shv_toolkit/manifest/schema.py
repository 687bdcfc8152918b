"""The manifest schema: the single source of truth for every Parquet table shv-build writes.

Each table is a list of :class:`Column` specs (name, Arrow type, nullable, description); the pyarrow
schemas, :func:`validate_rows` and the human-readable ``manifests/SCHEMA.md`` (:func:`render_markdown`,
regenerate with ``python -m shv_toolkit.manifest.schema``) are all derived from them.

Versioning: ``SCHEMA_VERSION`` is ``MAJOR.MINOR``. MINOR grows when columns are added (old readers keep
working); MAJOR grows when a column is removed, renamed, retyped or changes meaning.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shv_toolkit.config import FilterConfig
from shv_toolkit.core.errors import ShvError
from shv_toolkit.manifest.scores import (
    CROP_OUT_OF_FRAME,
    DROP_REASONS,
    RULES,
    SCORE_DESCRIPTIONS,
    SCORE_NAMES,
)

SCHEMA_VERSION = "2.0"
SPLITS = ("train", "test")
TABLES = ("sources", "clips", "train", "test")

CROP_DEFINITION = (
    "square crop centred on the smoothed face box centre, side = face box side (max of width and "
    "height, source pixels) / crop_scale; the face box fills crop_scale of the crop side"
)


class SchemaError(ShvError):
    """Rows do not match the manifest schema (missing/unknown column, wrong type, null, bad value)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    description: str
    choices: tuple[str, ...] | None = None  # allowed values of a string column (besides null)

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable,
                        metadata={b"description": self.description.encode()})


S, F64, I32, I64, B = pa.string(), pa.float64(), pa.int32(), pa.int64(), pa.bool_()

_PROVENANCE = [
    Column("config_hash", S, False, "hash of the build configuration that produced the row (BuildConfig.config_hash)"),
    Column("toolkit_version", S, False, "shv_toolkit version that wrote the row"),
    Column("schema_version", S, False, f"manifest schema version (this document: {SCHEMA_VERSION})"),
]

SOURCES: tuple[Column, ...] = (
    Column("source_id", S, False, "stable id of the source (derived from its URL or path; also its file name stem)"),
    Column("url", S, False, "the input line as given: http(s) URL or local file path"),
    Column("kind", S, False, "url: downloaded with yt-dlp; file: a local file; invalid: a rejected input line",
           choices=("url", "file", "invalid")),
    Column("local_path", S, True, "source media file; relative to the manifest directory when it lies inside "
           "the build directory (downloads), otherwise the local input path as given"),
    Column("title", S, True, "title reported by the site (metadata only, never used in paths)"),
    Column("uploader", S, True, "uploader reported by the site"),
    Column("channel", S, True, "channel reported by the site"),
    Column("duration_s", F64, True, "duration in seconds (probe)"),
    Column("fps", F64, True, "average frame rate of the source (probe)"),
    Column("width", I32, True, "displayed width in pixels (rotation applied)"),
    Column("height", I32, True, "displayed height in pixels (rotation applied)"),
    Column("has_audio", B, True, "the source has an audio stream"),
    Column("color_transfer", S, True, "transfer characteristic of the video (FFmpeg name, probe); smpte2084 "
           "(PQ) and arib-std-b67 (HLG) are HDR, rejected unless download.hdr is keep; null: untagged "
           "(schema 1.1)"),
    Column("license", S, True, "licence reported by the site, if any"),
    Column("webpage_url", S, True, "canonical page URL reported by yt-dlp"),
    Column("extractor", S, True, "yt-dlp extractor name (null for local files)"),
    Column("status", S, False, "ok: the source produced clips; anything else: it failed (see error)"),
    Column("error", S, True, "one-line reason when status is not ok"),
    Column("n_scenes", I32, False, "scenes found by the scene cutter"),
    Column("n_scenes_too_short", I32, False, "scenes shorter than one clip (dropped)"),
    Column("n_clips_total", I32, False, "candidate clips cut from the source (kept + dropped)"),
    Column("n_clips_kept", I32, False, "clips that passed the quality filter"),
    Column("n_damaged_packets_video", I32, True, "video packets the decoder refused and the build skipped, as "
           "FFmpeg does (null: not analysed) (schema 2.0)"),
    Column("n_damaged_packets_audio", I32, True, "audio packets the decoder refused and the build skipped "
           "(silence in their place, later audio kept in sync) (schema 2.0)"),
    Column("damaged_seconds", F64, True, "seconds of the source affected by damaged packets: an audio packet's "
           "duration, a video packet's time up to the next keyframe (overlaps counted once); a source with more "
           "than filters.max_damaged_share of its duration damaged fails (schema 2.0)"),
    Column("split", S, True, "train or test for sources with status ok (source-level split), else null",
           choices=SPLITS),
    *_PROVENANCE,
)

_SCORE_COLUMNS = tuple(
    Column(f"score_{n}", F64, True, SCORE_DESCRIPTIONS[n] + " (NaN: not measured)") for n in SCORE_NAMES
)

CLIPS: tuple[Column, ...] = (
    Column("clip_id", S, False, "stable id of the clip (source id, track and frame range)"),
    Column("source_id", S, False, "source the clip was cut from (sources.source_id)"),
    Column("scene_index", I32, False, "index of the scene within the source's usable scenes"),
    Column("track_id", I32, False, "face track within the scene"),
    Column("start_frame", I64, False, "first frame on the source's constant-rate grid at fps (inclusive)"),
    Column("end_frame", I64, False, "end frame on that grid (exclusive)"),
    Column("start_s", F64, False, "start time in the source, seconds (start_frame / fps)"),
    Column("end_s", F64, False, "end time in the source, seconds (end_frame / fps)"),
    Column("fps", F64, False, "frame rate of the clip"),
    Column("n_frames", I32, False, "frames in the clip (end_frame - start_frame)"),
    Column("width", I32, False, "clip width in pixels"),
    Column("height", I32, False, "clip height in pixels"),
    Column("video_path", S, True, "H.264/AAC mp4, relative to the manifest directory (null if not written)"),
    Column("audio_path", S, True, "16 kHz mono 16-bit wav of the mix, relative to the manifest directory"),
    Column("vocals_path", S, True, "16 kHz mono wav of the separated vocals (null without a separator)"),
    Column("crop_cx", F64, False, "median crop centre x over the clip's frames, source pixels"),
    Column("crop_cy", F64, False, "median crop centre y, source pixels"),
    Column("crop_side", F64, False, "median crop square side, source pixels (= face box side / crop_scale)"),
    Column("crop_scale", F64, False, "face box side / crop side (0.8 in the SINGER paper)"),
    Column("pad_fraction", F64, False, "largest share over frames of the crop lying outside the source frame "
           "(filled black)"),
    *_SCORE_COLUMNS,
    Column("keep", B, False, "the clip passed every quality filter (always true with --filter-mode score-only)"),
    Column("drop_reason", S, True, "the filter that dropped the clip: the name of its first failing score "
           f"(see Quality filters) or {CROP_OUT_OF_FRAME} (pad_fraction above faces.max_pad_fraction, or above 0 "
           "with faces.out_of_frame reject); null when kept (schema 2.0; 1.x: name=value<threshold)", choices=DROP_REASONS),
    Column("drop_value", F64, True, "the dropping filter's measured value (its score_<name>, or pad_fraction "
           "for crop_out_of_frame); NaN: the score could not be measured (e.g. no audio); null when kept "
           "(schema 2.0)"),
    Column("drop_threshold", F64, True, "the threshold drop_value failed: below it for a minimum (min_* key), "
           "above it for a maximum (max_* key); null when kept (schema 2.0)"),
    Column("split", S, True, "split of the clip's source; null when the source kept no clip (status empty)",
           choices=SPLITS),
    Column("vocals_backend", S, False, "name of the vocal separator used (e.g. spleeter-2stems, a demucs model) or none"),
    *_PROVENANCE,
)

COLUMNS: dict[str, tuple[Column, ...]] = {"sources": SOURCES, "clips": CLIPS, "train": CLIPS, "test": CLIPS}

TABLE_DESCRIPTIONS = {
    "sources": "one row per input line: every source with its metadata and outcome, and rejected input lines",
    "clips": "one row per candidate clip (kept and dropped) with all quality scores, keep flag and drop reason",
    "train": "the clips rows with keep = true and split = train",
    "test": "the clips rows with keep = true and split = test",
}


def columns(table: str) -> tuple[Column, ...]:
    try:
        return COLUMNS[table]
    except KeyError:
        raise SchemaError(f"unknown manifest table {table!r} (one of {', '.join(TABLES)})") from None


def column_names(table: str) -> list[str]:
    return [c.name for c in columns(table)]


def arrow_schema(table: str) -> pa.Schema:
    """The pyarrow schema of ``table`` (field metadata carry the descriptions)."""
    return pa.schema([c.field() for c in columns(table)],
                     metadata={b"shv.table": table.encode(), b"shv.schema_version": SCHEMA_VERSION.encode()})


def empty_row(table: str, **values: Any) -> dict[str, Any]:
    """A row of ``table`` with every column ``None`` except ``values`` (unknown names raise)."""
    names = column_names(table)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise SchemaError(f"{table}: unknown column(s) {', '.join(unknown)}")
    row = dict.fromkeys(names)
    row.update(values)
    return row


def _type_ok(col: Column, v: Any) -> bool:
    t = col.type
    if pa.types.is_string(t):
        return isinstance(v, str)
    if pa.types.is_boolean(t):
        return isinstance(v, bool | np.bool_)
    if pa.types.is_integer(t):
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Integral):
            return False
        bits = t.bit_width
        return -(2 ** (bits - 1)) <= int(v) < 2 ** (bits - 1)
    if pa.types.is_floating(t):
        return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
    raise TypeError(f"no validation rule for Arrow type {t}")


def validate_rows(table: str, rows: list[dict[str, Any]]) -> None:
    """Raise :class:`SchemaError` unless every row has exactly the table's columns with valid values.

    Checks per row: no missing and no unknown column; ``None`` only in nullable columns (a float NaN
    counts as a value, "not measured"); Python/numpy type matching the Arrow type (bool is not an
    integer; integers must fit the column's width; ints are accepted for float columns); string values
    within ``choices`` where a column has them; keep/drop_reason consistent in clip tables.
    """
    cols = columns(table)
    names = [c.name for c in cols]
    name_set = set(names)
    for i, row in enumerate(rows):
        rid = row.get("clip_id") or row.get("source_id") or f"#{i}"
        keys = set(row)
        missing = [n for n in names if n not in keys]
        unknown = sorted(keys - name_set)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown column(s) {', '.join(unknown)}")
            raise SchemaError(f"{table} row {i} ({rid}): " + "; ".join(parts))
        for c in cols:
            v = row[c.name]
            if v is None:
                if not c.nullable:
                    raise SchemaError(f"{table} row {i} ({rid}): column {c.name} must not be null")
                continue
            if not _type_ok(c, v):
                raise SchemaError(
                    f"{table} row {i} ({rid}): column {c.name} expects {c.type}, got {type(v).__name__} {v!r:.80}"
                )
            if c.choices is not None and v not in c.choices:
                raise SchemaError(
                    f"{table} row {i} ({rid}): column {c.name} must be one of {', '.join(c.choices)}, got {v!r:.80}"
                )
        if table in ("clips", "train", "test"):
            drop = (row["drop_reason"], row["drop_value"], row["drop_threshold"])
            if bool(row["keep"]) and drop != (None, None, None):
                raise SchemaError(f"{table} row {i} ({rid}): kept clip has a drop_reason, drop_value or "
                                  "drop_threshold")
            if not bool(row["keep"]) and (not row["drop_reason"] or row["drop_threshold"] is None
                                          or row["drop_value"] is None):
                raise SchemaError(f"{table} row {i} ({rid}): dropped clip without drop_reason, drop_value "
                                  "and drop_threshold")
        if table in ("train", "test"):
            if not bool(row["keep"]) or row["split"] != table:
                raise SchemaError(f"{table} row {i} ({rid}): only kept clips of split {table} belong here")
            if row["video_path"] is None or row["audio_path"] is None:
                raise SchemaError(f"{table} row {i} ({rid}): a kept clip needs video_path and audio_path")


# ------------------------------------------------------------------------------------- markdown


def _threshold_rows() -> list[str]:
    defaults = {f.name: f.default for f in dataclasses.fields(FilterConfig)}
    out = []
    for name, op, field_name in RULES:
        fail = "<" if op == ">=" else ">"
        d = defaults[field_name]
        out.append(f"| `score_{name}` | `filters.{field_name}` | {_fmt_default(d)} | value {fail} threshold |")
    return out


def _fmt_default(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return f"{v:.1f}"
    return str(v)


def render_markdown() -> str:
    """The text of ``manifests/SCHEMA.md`` (generated; a test keeps the committed file in sync)."""
    lines = [
        "# SHV manifest schema",
        "",
        "<!-- Generated by `python -m shv_toolkit.manifest.schema` from shv_toolkit/manifest/schema.py;",
        "     do not edit by hand (tests/shv_toolkit/test_schema.py checks it is up to date). -->",
        "",
        f"Schema version: **{SCHEMA_VERSION}** (MAJOR.MINOR; MINOR adds columns, MAJOR changes or removes them).",
        "",
        "shv-build writes four Parquet files (pyarrow, readable with pandas, pyarrow and duckdb) at the top",
        "of its output directory. Every path inside them is relative to that directory. Each table carries",
        "the build's `config_hash`, `toolkit_version` and `schema_version` as columns and in the Parquet",
        "key-value metadata (`shv.config_hash`, `shv.toolkit_version`, `shv.schema_version`, `shv.table`).",
        "Rows are sorted by `source_id` (sources) or by `source_id, scene_index, track_id, start_frame,",
        "clip_id` (clip tables), so a rerun writes identical files. `manifests.done.json` is written last.",
        "",
        "| file | content |",
        "|---|---|",
    ]
    for t in TABLES:
        lines.append(f"| `{t}.parquet` | {TABLE_DESCRIPTIONS[t]} |")
    lines += [
        "",
        "## Crop definition",
        "",
        f"Each clip is a {CROP_DEFINITION}. Crop coordinates (`crop_cx`, `crop_cy`, `crop_side`) are",
        "medians over the clip's frames in source pixels of the displayed (rotation-applied) frame; parts",
        "of the crop outside the frame are black (`pad_fraction`). The crop is resized to `width x height`.",
        "8-bit limited-range 4:2:0 sources are cropped in their own YUV (no RGB round trip; the clip keeps and",
        "tags the source's BT.601/BT.709 matrix), chroma aligned with luma on the even crop grid; other",
        "sources go through RGB and are stored as BT.601. The exact definition is in `shv_toolkit/stages/crop.py`.",
        "The face box comes from mediapipe's detector run on keyframes (every `faces.detect_stride` x",
        "`faces.keyframe_multiple` frames, and on every `faces.detect_stride`-th frame between two keyframes",
        "whose faces disagree), linearly interpolated between detections and median-smoothed over",
        "`faces.smooth_window` frames (`shv_toolkit/stages/analysis.py`, `faces.py`).",
        "",
        "## Split",
        "",
        "Train/test is decided per source, so one video never appears in both (the SINGER paper split",
        "clips; splitting sources avoids identity leakage). Each source gets",
        "`u = int(sha256(\"shv-split-v1|<seed>|<source_id>\")[:16 hex], 16) / 2**64` in [0, 1).",
        "Default `split.mode = rank`: the `round_half_up(test_fraction * n)` sources with the smallest `u`",
        "(ties by source_id) are test, the rest train (n = number of sources with status ok); 5 sources",
        "give exactly 1 test source. `split.mode = threshold`: test iff `u < test_fraction` (a source keeps",
        "its split when others are added, but small sets can deviate far from 4:1).",
        "",
        "## Quality filters",
        "",
        "A clip whose crop leaves the source frame by more than `faces.max_pad_fraction` is dropped as",
        f"`{CROP_OUT_OF_FRAME}` (`drop_value` = `pad_fraction`). The other filters run in this order; the",
        "first failing one names the clip's `drop_reason` (the score's name), with the measured value in",
        "`drop_value` and the threshold in `drop_threshold`. A score that could not be measured (NaN, e.g.",
        "no audio) fails its filter with `drop_value` NaN. So `GROUP BY drop_reason` counts clips per filter.",
        "A threshold of null disables its filter; `--filter-mode score-only` keeps every clip but still",
        "stores the scores.",
        "",
        "| score column | threshold (config key) | default | drop when |",
        "|---|---|---|---|",
        *_threshold_rows(),
    ]
    for t in ("sources", "clips"):
        lines += [
            "",
            f"## `{t}.parquet`" + (" (also `train.parquet`, `test.parquet`)" if t == "clips" else ""),
            "",
            "| column | type | nullable | description |",
            "|---|---|---|---|",
        ]
        for c in columns(t):
            desc = c.description + (f" (one of: {', '.join(c.choices)})" if c.choices else "")
            lines.append(f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {desc} |")
    return "\n".join(lines) + "\n"


def schema_doc_path() -> Path:
    """``manifests/SCHEMA.md`` of the repository this module lives in."""
    return Path(__file__).resolve().parents[2] / "manifests" / "SCHEMA.md"


def write_markdown(path: str | Path | None = None) -> Path:
    p = Path(path) if path is not None else schema_doc_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_markdown())
    return p


def main(argv: list[str] | None = None) -> None:
    """``python -m shv_toolkit.manifest.schema [OUT]``: regenerate the schema document."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m shv_toolkit.manifest.schema",
                                 description="Write the manifest schema document (Markdown).")
    ap.add_argument("out", nargs="?", type=Path, default=None,
                    help=f"where to write it (default: {schema_doc_path()})")
    args = ap.parse_args(argv)
    sys.stdout.write(f"wrote {write_markdown(args.out)}\n")


if __name__ == "__main__":
    main()
