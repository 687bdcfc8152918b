"""Atomic writes: the old complete file or the new one, never a partial one; leftovers are removable."""

from __future__ import annotations

import os

import pytest

from shv_toolkit.core.atomic import PendingFile, atomic_path, atomic_write_text, partial_name, remove_partials


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_directory_replaces_directory(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_pending_file_commit_and_discard(tmp_path):
    p = PendingFile(tmp_path / "sub" / "clip.mp4", fsync=False)
    p.tmp.write_bytes(b"1")
    assert not p.final.exists()
    p.commit()
    assert p.final.read_bytes() == b"1"
    q = PendingFile(tmp_path / "sub" / "other.mp4")
    q.tmp.write_bytes(b"2")
    q.discard()
    assert sorted(x.name for x in (tmp_path / "sub").iterdir()) == ["clip.mp4"]


def test_remove_partials_takes_leftovers_of_any_process(tmp_path):
    (tmp_path / "keep.wav").write_text("k")
    (tmp_path / ".x.wav.partial-123").write_text("stale")
    (tmp_path / ".d.partial-9").mkdir()
    partial_name(tmp_path / "y.wav").write_text("mine")
    remove_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]
    assert partial_name(tmp_path / "z").name == f".z.partial-{os.getpid()}"
