"""Manifest schema: specs -> pyarrow schemas, row validation, generated SCHEMA.md."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from shv_toolkit.manifest import schema as sch
from shv_toolkit.manifest.schema import SchemaError, empty_row, validate_rows
from shv_toolkit.manifest.scores import SCORE_NAMES

REQUIRED_SOURCES = [
    "source_id", "url", "kind", "local_path", "title", "uploader", "channel", "duration_s", "fps", "width",
    "height", "has_audio", "color_transfer", "license", "webpage_url", "extractor", "status", "error", "n_scenes",
    "n_scenes_too_short", "n_clips_total", "n_clips_kept", "n_damaged_packets_video", "n_damaged_packets_audio",
    "damaged_seconds", "split", "config_hash", "toolkit_version",
    "schema_version",
]
REQUIRED_CLIPS = [
    "clip_id", "source_id", "scene_index", "track_id", "start_frame", "end_frame", "start_s", "end_s", "fps",
    "n_frames", "width", "height", "video_path", "audio_path", "vocals_path", "crop_cx", "crop_cy",
    "crop_side", "crop_scale", "pad_fraction", "keep", "drop_reason", "drop_value", "drop_threshold", "split", "vocals_backend",
    "config_hash", "toolkit_version", "schema_version",
]


def clip_row(**kw) -> dict:
    row = {
        "clip_id": "src1-t0-000050-000100", "source_id": "src1", "scene_index": 0, "track_id": 0,
        "start_frame": 50, "end_frame": 100, "start_s": 2.0, "end_s": 4.0, "fps": 25.0, "n_frames": 50,
        "width": 512, "height": 512, "video_path": "clips/src1/a.mp4", "audio_path": "clips/src1/a.wav",
        "vocals_path": None, "crop_cx": 180.0, "crop_cy": 140.5, "crop_side": 200.0, "crop_scale": 0.8,
        "pad_fraction": 0.0, "keep": True, "drop_reason": None, "drop_value": None, "drop_threshold": None,
        "split": "train", "vocals_backend": "none",
        "config_hash": "abc", "toolkit_version": "0.1.0", "schema_version": sch.SCHEMA_VERSION,
    }
    row.update({f"score_{n}": 1.0 for n in SCORE_NAMES})
    row.update(kw)
    return row


def test_tables_have_the_required_columns():
    assert sch.column_names("sources") == REQUIRED_SOURCES
    clips = sch.column_names("clips")
    assert set(REQUIRED_CLIPS) <= set(clips)
    assert [c for c in clips if c.startswith("score_")] == [f"score_{n}" for n in SCORE_NAMES]
    assert sch.column_names("train") == sch.column_names("test") == clips
    for t in sch.TABLES:
        s = sch.arrow_schema(t)
        assert isinstance(s, pa.Schema) and s.names == sch.column_names(t)
        assert s.metadata[b"shv.schema_version"] == sch.SCHEMA_VERSION.encode()
        assert all(f.metadata[b"description"] for f in s)
    s = sch.arrow_schema("clips")
    assert s.field("keep").type == pa.bool_() and not s.field("keep").nullable
    assert s.field("vocals_path").nullable and s.field("start_frame").type == pa.int64()


def test_valid_rows_pass_and_numpy_scalars_are_accepted():
    validate_rows("clips", [clip_row()])
    validate_rows("clips", [clip_row(n_frames=np.int64(50), crop_cx=np.float32(3.5), keep=np.bool_(True),
                                     score_yaw_deg=math.nan, start_s=2)])
    validate_rows("train", [clip_row()])
    validate_rows("sources", [empty_row("sources", source_id="x", url="/a.mp4", kind="file", status="failed",
                                        error="no face", n_scenes=0, n_scenes_too_short=0, n_clips_total=0,
                                        n_clips_kept=0, config_hash="h", toolkit_version="v",
                                        schema_version=sch.SCHEMA_VERSION)])


@pytest.mark.parametrize(
    ("table", "row", "match"),
    [
        ("clips", {k: v for k, v in clip_row().items() if k != "crop_cx"}, "missing column.*crop_cx"),
        ("clips", clip_row(score_bogus=1.0), "unknown column.*score_bogus"),
        ("clips", clip_row(n_frames="50"), "n_frames expects int32, got str"),
        ("clips", clip_row(n_frames=50.0), "n_frames expects int32"),
        ("clips", clip_row(width=True), "width expects int32, got bool"),
        ("clips", clip_row(n_frames=2**40), "n_frames expects int32"),
        ("clips", clip_row(keep=1), "keep expects bool"),
        ("clips", clip_row(crop_cx="1.0"), "crop_cx expects double"),
        ("clips", clip_row(clip_id=None), "clip_id must not be null"),
        ("clips", clip_row(split="val"), "split must be one of train, test"),
        ("clips", clip_row(keep=False), "dropped clip without drop_reason"),
        ("clips", clip_row(keep=False, drop_reason="motion", drop_value=0.0), "dropped clip without drop_reason"),
        ("clips", clip_row(drop_reason="motion"), "kept clip has a drop_reason"),
        ("clips", clip_row(drop_value=0.5), "kept clip has a drop_reason, drop_value"),
        # schema 2.0: the filter's name alone, from a fixed vocabulary
        ("clips", clip_row(keep=False, drop_reason="motion=0<0.15", drop_value=0.0, drop_threshold=0.15),
         "drop_reason must be one of"),
        ("test", clip_row(), "only kept clips of split test"),
        ("train", clip_row(video_path=None), "needs video_path"),
        ("sources", {"source_id": "x"}, "missing column"),
    ],
)
def test_invalid_rows_raise(table, row, match):
    with pytest.raises(SchemaError, match=match):
        validate_rows(table, [row])


def test_unknown_table_and_empty_row():
    with pytest.raises(SchemaError, match="unknown manifest table"):
        validate_rows("bogus", [])
    with pytest.raises(SchemaError, match="unknown column"):
        empty_row("sources", nope=1)
    assert set(empty_row("clips")) == set(sch.column_names("clips"))


def test_committed_schema_doc_is_up_to_date():
    doc = sch.schema_doc_path()
    assert doc.is_file(), "manifests/SCHEMA.md missing: python -m shv_toolkit.manifest.schema"
    assert doc.read_text() == sch.render_markdown(), "manifests/SCHEMA.md is stale: python -m shv_toolkit.manifest.schema"
    text = doc.read_text()
    assert sch.CROP_DEFINITION in text
    for c in sch.column_names("clips") + sch.column_names("sources"):
        assert f"`{c}`" in text
    assert "| `score_sharpness` | `filters.min_sharpness` | 15.0 |" in text


def test_schema_command_writes_to_its_argument_and_help_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        sch.main(["--help"])
    assert exc.value.code == 0 and "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # not a file named --help
    sch.main([str(tmp_path / "doc.md")])
    assert (tmp_path / "doc.md").read_text() == sch.render_markdown()


def test_markdown_written_to_a_path(tmp_path):
    p = sch.write_markdown(tmp_path / "S.md")
    assert p.read_text() == sch.render_markdown()
