"""Atomic file writes: a reader or a killed run sees the old complete file or the new one, never half.

Every write goes to a hidden temporary name in the same directory (``.<name>.partial-<pid>``), is
flushed to disk and renamed over the final name with :func:`os.replace` (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL_MARK = ".partial-"


def partial_name(path: str | os.PathLike) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under in this process."""
    final = Path(path)
    return final.with_name(f".{final.name}{PARTIAL_MARK}{os.getpid()}")


def remove_partials(directory: str | os.PathLike, name: str = "*") -> None:
    """Remove leftovers of interrupted atomic writes of ``name`` (a glob) in ``directory``.
    Call only while nothing writes there."""
    d = Path(directory)
    if d.is_dir():
        for stale in d.glob(f".{name}{PARTIAL_MARK}*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                _fsync(p)
        return
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


class PendingFile:
    """A write in progress: ``tmp`` (file or directory) becomes ``final`` on :meth:`commit`, or is
    removed by :meth:`discard`. ``fsync=False`` skips flushing to disk before the rename (for files a
    later, flushed marker vouches for, such as clips)."""

    def __init__(self, path: str | os.PathLike, fsync: bool = True) -> None:
        self.final = Path(path)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = partial_name(self.final)
        self.fsync = fsync

    def commit(self) -> Path:
        if self.fsync:
            _fsync(self.tmp)
        if self.tmp.is_dir() and self.final.is_dir():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final

    def discard(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; once the block succeeds it is renamed to ``path``,
    else removed. The caller may write a file or make a directory there (a directory replaces an
    existing directory of that name)."""
    pending = PendingFile(path, fsync)
    try:
        yield pending.tmp
        pending.commit()
    finally:
        pending.discard()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
