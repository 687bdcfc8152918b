"""Manifest rows of a build, built from the schema (:func:`shv_toolkit.manifest.schema.empty_row`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from shv_toolkit.config import BuildConfig
from shv_toolkit.inputs import InputLineError, SourceSpec
from shv_toolkit.manifest.schema import empty_row
from shv_toolkit.stages.clips import ClipFiles, ClipSpec
from shv_toolkit.stages.download import SourceRecord

#: columns of ``sources`` copied from what the download stage records
_RECORD_COLUMNS = ("title", "uploader", "channel", "duration_s", "fps", "width", "height", "has_audio",
                   "color_transfer", "license", "webpage_url", "extractor")


def one_line(exc: BaseException) -> str:
    """An exception as the one-line reason a manifest row or the log carries."""
    msg = " ".join(str(exc).split()) or exc.__class__.__name__
    return msg[:500]


def relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def source_row(spec: SourceSpec) -> dict[str, Any]:
    """The row of a source before anything is known of it (status failed until it succeeds). ``url``
    is the entry as written in the list, so a local path stays relative to the list."""
    return empty_row("sources", source_id=spec.source_id, url=spec.original or spec.location, kind=spec.kind,
                     status="failed", n_scenes=0, n_scenes_too_short=0, n_clips_total=0, n_clips_kept=0)


def fill_from_record(row: dict[str, Any], rec: SourceRecord, out: Path) -> None:
    row["local_path"] = relative(Path(rec.local_path).resolve(), out.resolve())
    for name in _RECORD_COLUMNS:
        row[name] = getattr(rec, name)


def bad_line_row(bl: InputLineError) -> dict[str, Any]:
    """The row of a rejected input line."""
    return empty_row("sources", source_id=f"line-{bl.line_no:05d}", url=bl.text, kind="invalid", status="failed",
                     error=f"input line {bl.line_no}: {bl.reason}", n_scenes=0, n_scenes_too_short=0,
                     n_clips_total=0, n_clips_kept=0)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def clip_row(cfg: BuildConfig, out: Path, spec: ClipSpec, files: ClipFiles, clip_dir: Path,
             vocals_backend: str) -> dict[str, Any]:
    """The row of one rendered candidate clip; ``files.extra`` holds the scorer's verdict."""
    fps = cfg.clips.fps
    extra = files.extra or {}
    boxes = np.asarray(spec.boxes, dtype=float)

    def rel(name: str | None) -> str | None:
        return relative(clip_dir / name, out) if name else None

    row = empty_row(
        "clips", clip_id=spec.clip_id, source_id=spec.source_id, scene_index=int(spec.scene_index),
        track_id=int(spec.track_id), start_frame=int(spec.start_frame), end_frame=int(spec.end_frame),
        start_s=spec.start_frame / fps, end_s=spec.end_frame / fps, fps=float(fps),
        n_frames=int(spec.end_frame - spec.start_frame), width=int(cfg.clips.size), height=int(cfg.clips.size),
        video_path=rel(files.video_path), audio_path=rel(files.audio_path), vocals_path=rel(files.vocals_path),
        crop_cx=float(np.median(boxes[:, 0])), crop_cy=float(np.median(boxes[:, 1])),
        crop_side=float(np.median(boxes[:, 2])), crop_scale=float(cfg.faces.crop_scale),
        pad_fraction=float(spec.pad_fraction), keep=bool(extra.get("keep", False)),
        drop_reason=extra.get("drop_reason"), drop_value=_opt_float(extra.get("drop_value")),
        drop_threshold=_opt_float(extra.get("drop_threshold")), vocals_backend=vocals_backend,
    )
    for k, v in (extra.get("scores") or {}).items():
        row[f"score_{k}"] = None if v is None else float(v)
    return row
