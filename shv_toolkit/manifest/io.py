"""Writing and reading the Parquet manifests, and completion markers, all written atomically
(:mod:`shv_toolkit.core.atomic`): a reader or a killed run sees the old complete file or the new one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shv_toolkit.core.atomic import atomic_path, atomic_write_bytes, remove_partials
from shv_toolkit.manifest.schema import (
    SCHEMA_VERSION,
    SPLITS,
    TABLES,
    SchemaError,
    arrow_schema,
    validate_rows,
)

log = logging.getLogger(__name__)

#: completion marker written after the four tables
MANIFESTS_DONE = "manifests.done.json"
_META_PREFIX = "shv."


def write_table(path: str | os.PathLike, table: str, rows: list[dict[str, Any]],
                metadata: dict[str, str] | None = None,
                writer: Callable[[pa.Table, str], None] | None = None) -> Path:
    """Validate ``rows`` against ``table``'s schema and write them as Parquet atomically.

    ``metadata`` entries are stored in the Parquet key-value metadata as ``shv.<key>``. ``writer``
    replaces :func:`pyarrow.parquet.write_table` (tests use it to fail mid-write).
    """
    validate_rows(table, rows)
    schema = arrow_schema(table)
    meta = dict(schema.metadata or {})
    for k, v in (metadata or {}).items():
        meta[f"{_META_PREFIX}{k}".encode()] = str(v).encode()
    schema = schema.with_metadata(meta)
    tbl = pa.Table.from_pylist(rows, schema=schema)
    write = writer or (lambda t, p: pq.write_table(t, p, compression="zstd"))
    with atomic_path(path) as tmp:
        write(tbl, str(tmp))
    return Path(path)


def _clip_sort_key(r: dict[str, Any]) -> tuple:
    return (r["source_id"], r["scene_index"], r["track_id"], r["start_frame"], r["clip_id"])


def write_manifests(out_dir: str | os.PathLike, sources_rows: list[dict[str, Any]],
                    clip_rows: list[dict[str, Any]], config_hash: str, version: str) -> dict[str, Path]:
    """Write ``sources``, ``clips``, ``train`` and ``test`` Parquet files into ``out_dir``.

    ``config_hash``, ``toolkit_version`` (= ``version``) and ``schema_version`` are filled into every
    row (a row that already holds a different value is an error) and into the key-value metadata.
    Rows are sorted by id, so the same inputs give byte-identical files. ``train``/``test`` are the
    kept clips of each split. The old completion marker is removed first and
    ``manifests.done.json`` (row counts, hash, version) is written last.
    Returns ``{"sources": path, "clips": path, "train": path, "test": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MANIFESTS_DONE
    marker.unlink(missing_ok=True)
    for name in (*TABLES, MANIFESTS_DONE.rsplit(".", 1)[0]):  # leftovers of a killed earlier run
        remove_partials(out, f"{name}.*")
    prov = {"config_hash": config_hash, "toolkit_version": version, "schema_version": SCHEMA_VERSION}

    def stamp(rows: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
        stamped = []
        for r in rows:
            for k, v in prov.items():
                if r.get(k) not in (None, v):
                    raise SchemaError(f"{table} row {r.get('clip_id') or r.get('source_id')}: {k}={r[k]!r} "
                                      f"differs from this build's {v!r}")
            stamped.append({**r, **prov})
        return stamped

    sources = stamp(sources_rows, "sources")
    clips = stamp(clip_rows, "clips")
    validate_rows("sources", sources)
    validate_rows("clips", clips)
    sources.sort(key=lambda r: r["source_id"])
    clips.sort(key=_clip_sort_key)
    for tbl, rows in (("sources", sources), ("clips", clips)):
        key = "source_id" if tbl == "sources" else "clip_id"
        seen: set[str] = set()
        for r in rows:
            if r[key] in seen:
                raise SchemaError(f"{tbl}: duplicate {key} {r[key]!r}")
            seen.add(r[key])
    tables = {
        "sources": sources,
        "clips": clips,
        **{s: [r for r in clips if r["keep"] and r["split"] == s] for s in SPLITS},
    }
    paths: dict[str, Path] = {}
    for name in TABLES:
        paths[name] = write_table(out / f"{name}.parquet", name, tables[name], metadata={**prov, "table": name})
    mark_done(marker, {**prov, "rows": {n: len(tables[n]) for n in TABLES},
                       "files": {n: p.name for n, p in paths.items()}})
    log.info("manifests: %s", ", ".join(f"{n} {len(tables[n])} rows" for n in TABLES))
    return paths


def _read_table(path: str | os.PathLike) -> pa.Table:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    meta = read_metadata(p)
    major = meta.get("schema_version", SCHEMA_VERSION).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise SchemaError(f"{p.name} has schema version {meta.get('schema_version')}, this toolkit reads "
                          f"{SCHEMA_VERSION.split('.')[0]}.x")
    return pq.read_table(p)


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A manifest table as a list of plain-Python dicts (nulls are ``None``, float NaN stays NaN)."""
    return _read_table(path).to_pylist()


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """A manifest table as a pandas DataFrame (nullable integer/boolean columns kept nullable)."""
    tbl = _read_table(path)
    return tbl.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
                                       pa.bool_(): pd.BooleanDtype()}.get)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``shv.*`` key-value metadata of a manifest (prefix stripped)."""
    md = pq.read_schema(Path(path)).metadata or {}
    out = {}
    for k, v in md.items():
        key = k.decode()
        if key.startswith(_META_PREFIX):
            out[key[len(_META_PREFIX):]] = v.decode()
    return out


def mark_done(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically: the file exists only once complete."""
    data = json.dumps(payload, sort_keys=True, indent=1).encode()  # NaN scores round-trip as NaN
    return atomic_write_bytes(path, data)


def is_done(path: str | os.PathLike) -> bool:
    """True when ``path`` is a completion marker written by :func:`mark_done` (a JSON object)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        return isinstance(json.loads(p.read_bytes()), dict)
    except (OSError, ValueError):
        log.warning("ignoring unreadable completion marker %s", p)
        return False
