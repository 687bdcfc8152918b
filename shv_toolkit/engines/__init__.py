"""Engines decide WHERE a unit of work (one source) runs; they know nothing of the stages.

An engine is a callable ``engine(fn, specs) -> iterable of results`` (in any order). ``fn`` is the
in-process processor; engines that run work elsewhere build an equivalent processor in each worker
from the same config, so results do not depend on the engine.
"""

from __future__ import annotations

from pathlib import Path

from shv_toolkit.config import BuildConfig
from shv_toolkit.errors import UsageError


def make_engine(name: str, workers: int = 1, cfg: BuildConfig | None = None, out: Path | None = None,
                progress: bool = True, **options):
    if name == "local":
        from shv_toolkit.engines.local import LocalEngine

        return LocalEngine(workers=workers, cfg=cfg or BuildConfig(), out=out, progress=progress)
    raise UsageError(f"unknown engine {name!r} (known: local)")
