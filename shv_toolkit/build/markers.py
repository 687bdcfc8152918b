"""Completion markers of a build: ``work/<id>/plan.json`` (analysis done), ``work/<id>/groups/<i>.json``
(clip group done) and, last, ``work/<id>/result.json`` (source done).

Each is a JSON object written atomically (:func:`shv_toolkit.manifest.io.mark_done`) holding the
config hash, the marker format and the unit's result in :mod:`shv_toolkit.core.jsoncodec` form. A
marker of another config or format, or an unreadable one, counts as missing: its work is redone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shv_toolkit import __version__
from shv_toolkit.build.layout import BuildLayout
from shv_toolkit.build.units import GroupResult, PlannedSource, SourceResult
from shv_toolkit.core.jsoncodec import decode, encode
from shv_toolkit.manifest import io as manifest_io

log = logging.getLogger(__name__)

#: bump when the payload of a marker changes shape: older markers are then redone, never misread
MARKER_FORMAT = 2


class Markers:
    """Reads and writes the completion markers of one build directory for one config."""

    def __init__(self, layout: BuildLayout, config_hash: str) -> None:
        self.layout, self.config_hash = layout, config_hash

    def _load(self, path, key: str, expected: type) -> Any:
        if not manifest_io.is_done(path):
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("config_hash") != self.config_hash or data.get("marker_format") != MARKER_FORMAT:
                return None
            value = decode(data[key])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable marker %s (%s): its work will be done again", path, exc)
            return None
        if not isinstance(value, expected):
            log.warning("marker %s holds no %s: its work will be done again", path, expected.__name__)
            return None
        return value

    def _save(self, path, key: str, value: Any, **extra: Any) -> None:
        manifest_io.mark_done(path, {"config_hash": self.config_hash, "toolkit_version": __version__,
                                     "marker_format": MARKER_FORMAT, key: encode(value), **extra})

    def plan(self, source_id: str) -> PlannedSource | None:
        return self._load(self.layout.plan_file(source_id), "plan", PlannedSource)

    def save_plan(self, source_id: str, plan: PlannedSource) -> None:
        self._save(self.layout.plan_file(source_id), "plan", plan)

    def group(self, source_id: str, index: int, clip_ids: list[str]) -> GroupResult | None:
        """A finished group's result, if its marker lists exactly ``clip_ids``."""
        path = self.layout.group_file(source_id, index)
        got = self._load(path, "group", GroupResult)
        if got is None or [c["clip_id"] for c in got.clips] != clip_ids:
            return None
        return got

    def save_group(self, source_id: str, index: int, result: GroupResult) -> None:
        self._save(self.layout.group_file(source_id, index), "group", result)

    def result(self, source_id: str) -> SourceResult | None:
        return self._load(self.layout.result_file(source_id), "result", SourceResult)

    def save_result(self, source_id: str, result: SourceResult) -> None:
        self._save(self.layout.result_file(source_id), "result", result)
