"""Manifests of an SHV build: schema (single source of truth), Parquet I/O and the source-level split.

* :mod:`shv_toolkit.manifest.schema`: ``SCHEMA_VERSION``, column specs, pyarrow schemas, ``validate_rows``,
  the generator of ``manifests/SCHEMA.md`` (``python -m shv_toolkit.manifest.schema``);
* :mod:`shv_toolkit.manifest.io`: atomic Parquet writes, ``write_manifests``, ``read_manifest``,
  completion markers ``mark_done`` / ``is_done``;
* :mod:`shv_toolkit.manifest.split`: ``assign_splits`` (deterministic 4:1 train/test per source).

The names below are importable from this package directly; submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "schema",
    "SchemaError": "schema",
    "arrow_schema": "schema",
    "empty_row": "schema",
    "validate_rows": "schema",
    "is_done": "io",
    "mark_done": "io",
    "read_manifest": "io",
    "read_metadata": "io",
    "read_rows": "io",
    "write_manifests": "io",
    "assign_splits": "split",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
