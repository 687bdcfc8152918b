"""``external``: videos generated elsewhere (Hallo, SadTalker, EchoMimic, ...), one file per test clip.

``--videos DIR`` holds one video per test clip named by its clip id (``<clip_id>.mp4``, or any of
:data:`benchmark.evaluate.VIDEO_EXTENSIONS`); ``--name`` names the leaderboard row. A test clip without a
video fails with :class:`MissingVideoError` and an unreadable one fails when it is decoded; both are listed
per clip in the run summary, the per-clip Parquet and the report, never skipped silently. Videos in DIR that
match no test clip are listed too (usually a naming mistake). Each video is resampled to the protocol's
25 fps when decoded; its length must match the clip's within the protocol's tolerance (2 frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.methods import METHODS, register
from benchmark.methods.base import ClipInput, Method, MethodUnavailableError, MissingVideoError
from shv_toolkit.core.errors import UsageError
from shv_toolkit.core.hashing import sha256_file


@register
class External(Method):
    name = "external"
    summary = "videos generated elsewhere, one per test clip named <clip_id>.mp4 in --videos DIR"
    usage = "--videos DIR --name ROW_NAME"
    generates = False

    def __init__(self, videos: str | Path | None = None, name: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if not videos:
            raise UsageError("method external needs --videos DIR (one video per test clip, named <clip_id>.mp4)")
        if not name:
            raise UsageError("method external needs --name NAME for its leaderboard row (e.g. --name hallo)")
        if name in METHODS:
            raise UsageError(f"--name {name!r} is a built-in method's row name; choose another (e.g. {name}-ext)")
        self.videos_dir = Path(videos)
        self._row = name
        self._index: dict[str, Path] | None = None

    @property
    def row_name(self) -> str:
        return self._row

    def check(self) -> None:
        from benchmark.evaluate import list_videos

        if not self.videos_dir.is_dir():
            raise MethodUnavailableError(f"--videos: not a directory: {self.videos_dir}")
        try:
            self._index = list_videos(self.videos_dir)
        except UsageError as exc:
            raise MethodUnavailableError(str(exc)) from exc

    @property
    def index(self) -> dict[str, Path]:
        if self._index is None:
            self.check()
        assert self._index is not None
        return self._index

    def fingerprint(self) -> dict[str, Any]:
        return {"method": self.name, "name": self._row, "videos": str(self.videos_dir.resolve())}

    def clip_fingerprint(self, clip_id: str) -> dict[str, Any]:
        path = self.index.get(clip_id)
        if path is None:
            return {"video": None}
        return {"video": path.name, "sha256": sha256_file(path)}

    def input_notes(self, clip_ids: list[str]) -> dict[str, list[str]]:
        extra = sorted(set(self.index) - set(clip_ids))
        return {"videos matching no test clip (not scored)": [str(self.index[k]) for k in extra]} if extra else {}

    def generate(self, clip: ClipInput) -> Path:
        path = self.index.get(clip.clip_id)
        if path is None:
            raise MissingVideoError(f"no video for clip {clip.clip_id} in {self.videos_dir} (expected {clip.clip_id}.mp4)")
        return path
