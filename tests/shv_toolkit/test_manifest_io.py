"""Parquet manifests: atomic writes, deterministic content, metadata, pandas/pyarrow/duckdb readers."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.manifest import io as mio
from shv_toolkit.manifest.schema import SCHEMA_VERSION, SchemaError, empty_row
from shv_toolkit.manifest.scores import SCORE_NAMES

HASH, VERSION = "cfg0123456789abc", "0.1.0"


def source_row(sid: str, status: str = "ok", split: str | None = "train", **kw) -> dict:
    row = empty_row(
        "sources", source_id=sid, url=f"https://example.org/{sid}", kind="url", local_path=f"downloads/{sid}.mp4",
        title="Ünïcode title 'quoted'", duration_s=12.5, fps=25.0, width=640, height=360, has_audio=True,
        status=status, error=None if status == "ok" else "HTTP Error 404", n_scenes=2, n_scenes_too_short=1,
        n_clips_total=3, n_clips_kept=2, split=split if status == "ok" else None,
    )
    row.update(kw)
    for k in ("config_hash", "toolkit_version", "schema_version"):
        row.pop(k)  # filled in by write_manifests
    return row


def clip_row(sid: str, start: int, keep: bool, split: str, **kw) -> dict:
    row = {
        "clip_id": f"{sid}-t0-{start:06d}", "source_id": sid, "scene_index": 0, "track_id": 0,
        "start_frame": start, "end_frame": start + 50, "start_s": start / 25, "end_s": (start + 50) / 25,
        "fps": 25.0, "n_frames": 50, "width": 512, "height": 512,
        "video_path": f"clips/{sid}/{start}.mp4", "audio_path": f"clips/{sid}/{start}.wav", "vocals_path": None,
        "crop_cx": 320.0, "crop_cy": 180.0, "crop_side": 250.0, "crop_scale": 0.8, "pad_fraction": 0.0,
        "keep": keep, "drop_reason": None if keep else "sharpness", "drop_value": None if keep else 8.1,
        "drop_threshold": None if keep else 15.0, "split": split,
        "vocals_backend": "spleeter",
    }
    row.update({f"score_{n}": float(start) / 100 for n in SCORE_NAMES})
    row["score_yaw_deg"] = math.nan
    row.update(kw)
    return row


def dataset() -> tuple[list[dict], list[dict]]:
    sources = [source_row("b-src"), source_row("a-src", split="test"), source_row("c-bad", status="failed")]
    clips = [clip_row("b-src", s, keep=s != 100, split="train") for s in (100, 0, 50)]
    clips += [clip_row("a-src", s, keep=True, split="test") for s in (50, 0)]
    return sources, clips


def test_write_read_with_pandas_pyarrow_duckdb(tmp_path):
    sources, clips = dataset()
    paths = mio.write_manifests(tmp_path, sources, clips, HASH, VERSION)
    assert {k: p.name for k, p in paths.items()} == {
        "sources": "sources.parquet", "clips": "clips.parquet", "train": "train.parquet", "test": "test.parquet"}
    # pandas
    df = mio.read_manifest(paths["clips"])
    assert list(df["clip_id"]) == ["a-src-t0-000000", "a-src-t0-000050", "b-src-t0-000000", "b-src-t0-000050",
                                   "b-src-t0-000100"]
    assert df["keep"].tolist() == [True, True, True, True, False]
    assert tuple(df.loc[4, ["drop_reason", "drop_value", "drop_threshold"]]) == ("sharpness", 8.1, 15.0)
    assert df.loc[:3, ["drop_reason", "drop_value", "drop_threshold"]].isna().all().all()
    assert df["score_yaw_deg"].isna().all() and df["vocals_path"].isna().all()
    assert (df["config_hash"] == HASH).all() and (df["schema_version"] == SCHEMA_VERSION).all()
    rows = mio.read_rows(paths["clips"])
    assert rows[0]["vocals_path"] is None and math.isnan(rows[0]["score_yaw_deg"]) and rows[0]["n_frames"] == 50
    assert list(pd.read_parquet(paths["train"])["clip_id"]) == ["b-src-t0-000000", "b-src-t0-000050"]
    # pyarrow: types and key-value metadata
    tbl = pq.read_table(paths["sources"])
    assert str(tbl.schema.field("width").type) == "int32"
    assert tbl.column("source_id").to_pylist() == ["a-src", "b-src", "c-bad"]
    assert mio.read_metadata(paths["sources"]) == {
        "config_hash": HASH, "toolkit_version": VERSION, "schema_version": SCHEMA_VERSION, "table": "sources"}
    # duckdb
    con = duckdb.connect()
    n_test, = con.execute(f"SELECT count(*) FROM read_parquet('{paths['test']}')").fetchone()
    assert n_test == 2
    rows = con.execute(
        f"SELECT s.split, count(*) FROM read_parquet('{paths['clips']}') c "
        f"JOIN read_parquet('{paths['sources']}') s USING (source_id) WHERE c.keep GROUP BY s.split ORDER BY 1"
    ).fetchall()
    assert rows == [("test", 2), ("train", 2)]
    title, = con.execute(f"SELECT title FROM '{paths['sources']}' WHERE source_id = 'a-src'").fetchone()
    assert title == "Ünïcode title 'quoted'"
    # completion marker, written last
    done = json.loads((tmp_path / mio.MANIFESTS_DONE).read_text())
    assert done["rows"] == {"sources": 3, "clips": 5, "train": 2, "test": 2} and done["config_hash"] == HASH
    assert all((tmp_path / mio.MANIFESTS_DONE).stat().st_mtime_ns >= p.stat().st_mtime_ns for p in paths.values())


def test_reruns_in_any_order_write_identical_bytes(tmp_path):
    sources, clips = dataset()
    a = mio.write_manifests(tmp_path / "a", sources, clips, HASH, VERSION)
    rnd = random.Random(0)
    s2, c2 = sources[:], clips[:]
    rnd.shuffle(s2)
    rnd.shuffle(c2)
    b = mio.write_manifests(tmp_path / "b", s2, c2, HASH, VERSION)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name


def test_empty_build_writes_empty_tables(tmp_path):
    paths = mio.write_manifests(tmp_path, [source_row("x", status="failed")], [], HASH, VERSION)
    assert len(mio.read_manifest(paths["train"])) == 0
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{paths['clips']}'").fetchone() == (0,)


def test_invalid_rows_and_conflicts_raise_before_writing(tmp_path):
    sources, clips = dataset()
    with pytest.raises(SchemaError, match="score_pad_fraction"):
        mio.write_manifests(tmp_path, sources, [*clips[:1], {**clips[1], "score_pad_fraction": 0.0}], HASH, VERSION)
    with pytest.raises(SchemaError, match="duplicate clip_id"):
        mio.write_manifests(tmp_path, sources, [*clips, clips[0]], HASH, VERSION)
    with pytest.raises(SchemaError, match="config_hash"):
        mio.write_manifests(tmp_path, sources, [{**clips[0], "config_hash": "other"}], HASH, VERSION)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_partial(tmp_path):
    sources, clips = dataset()
    paths = mio.write_manifests(tmp_path, sources, clips, HASH, VERSION)
    before = paths["clips"].read_bytes()

    def exploding_writer(table, where):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        mio.write_table(paths["clips"], "clips", [{**c, "config_hash": HASH, "toolkit_version": VERSION,
                                                    "schema_version": SCHEMA_VERSION} for c in clips],
                        writer=exploding_writer)
    assert paths["clips"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "marker.json") as tmp:
            tmp.write_text("{")
            raise ValueError("interrupted")
    assert not (tmp_path / "marker.json").exists() and not list(tmp_path.glob(".marker*"))


KILL_SCRIPT = r"""
import os, signal, sys
from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.manifest import io as mio
sys.path.insert(0, sys.argv[2])
from test_manifest_io import dataset, HASH, VERSION
sources, clips = dataset()

def dying_writer(table, where):
    with open(where, "wb") as fh:
        fh.write(b"PAR1 half a file")
        fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)

real = mio.write_table
def write_table(path, table, rows, metadata=None, writer=None):
    return real(path, table, rows, metadata, writer=dying_writer if table == "train" else None)
mio.write_table = write_table
mio.write_manifests(sys.argv[1], sources, clips, HASH, VERSION)
"""


def test_kill_9_mid_write_leaves_no_half_file_and_a_rerun_completes(tmp_path):
    out = tmp_path / "out"
    sources, clips = dataset()
    mio.write_manifests(out, sources, clips, HASH, VERSION)
    old_train = (out / "train.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), str(Path(__file__).parent)],
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not mio.is_done(out / mio.MANIFESTS_DONE)  # the marker went first and was not rewritten
    assert (out / "train.parquet").read_bytes() == old_train  # the old complete file, not half a new one
    assert pq.read_table(out / "clips.parquet").num_rows == 5
    assert list(out.glob(".train.parquet.partial-*"))  # the killed writer's temp file ...
    mio.write_manifests(out, sources, clips, HASH, VERSION)
    assert not list(out.glob(".*partial*"))  # ... is cleaned up by the rerun
    assert mio.is_done(out / mio.MANIFESTS_DONE)


def test_markers(tmp_path):
    m = tmp_path / "w" / "result.json"
    assert not mio.is_done(m)
    mio.mark_done(m, {"config_hash": HASH, "result": {"score": math.nan, "n": 1}})
    assert mio.is_done(m)
    assert math.isnan(json.loads(m.read_text())["result"]["score"])
    (tmp_path / "garbage.json").write_text("{not json")
    assert not mio.is_done(tmp_path / "garbage.json")
    (tmp_path / "list.json").write_text("[1]")
    assert not mio.is_done(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError):
        mio.read_manifest(tmp_path / "nope.parquet")
