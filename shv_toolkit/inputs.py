"""Step 1 of shv-build: read the list of sources (one URL or local file path per line).

Rules of the list file (UTF-8; a leading BOM is ignored):

* One entry per line. Leading and trailing whitespace is stripped.
* Blank lines and lines whose first non-blank character is ``#`` are ignored.
* A trailing comment is a ``#`` preceded by whitespace (``https://x/v  # live take``). A ``#``
  glued to the text is kept, so URL fragments (``page#t=30``) and file names like ``take#2.mp4``
  survive; a file name containing `` #`` cannot be listed (rename it).
* ``http://`` and ``https://`` URLs are downloaded. Any other ``scheme:`` prefix (``file://``,
  ``ftp://``, ``javascript:``, ``data:``, ``mailto:`` ...) is rejected for that line. A local file
  whose name looks like a scheme (``a:b.mp4``) can be listed as ``./a:b.mp4``.
* Anything else is a local file path: ``~`` is expanded, relative paths are relative to the
  directory of the list file. Directories are rejected; a missing file is accepted here and
  reported by the download step (so it gets a row in ``sources.parquet``).
* Duplicates are collapsed, the first occurrence is kept: URLs compare after normalisation
  (lower-case scheme and host, default port and fragment removed, empty path = ``/``), files by
  resolved path and by content (two names of the same bytes are one source).

Source ids (``src-`` + 16 hex digits) never come from titles or remote metadata:

* URL: SHA-256 of the normalised URL.
* Local file: SHA-256 of the file's bytes, so moving or renaming the file keeps its id; when the
  file cannot be read, SHA-256 of ``"path:" + resolved path``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from shv_toolkit.core.errors import InputListError

log = logging.getLogger(__name__)

ID_PREFIX = "src-"
ID_HEX = 16
MAX_LINE_CHARS = 8192

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_INLINE_COMMENT_RE = re.compile(r"\s+#.*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SourceSpec:
    """One accepted entry of the list."""

    source_id: str  # "src-" + 16 hex digits, filesystem-safe
    location: str  # normalised URL, or the resolved absolute path of a local file
    kind: Literal["url", "file"]
    line_no: int  # 1-based line of the list file
    original: str = ""  # the entry as written in the list (comment stripped)


@dataclass(frozen=True)
class InputLineError:
    """A rejected line of the list: reported per line, never fatal for the build."""

    line_no: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}: {self.text[:200]!r}"


def safe_filename(s: str, max_len: int = 100) -> str:
    """A file-name-safe version of ``s``: only ``[A-Za-z0-9._-]``, no leading dot or dash.

    If anything had to change (unsafe characters, length), a short hash of the original is
    appended so distinct inputs stay distinct. Already-safe strings are returned unchanged.
    """
    norm = unicodedata.normalize("NFKC", s)
    cleaned = _UNSAFE_CHARS_RE.sub("_", norm).lstrip(".-_")
    if cleaned == s and 0 < len(s) <= max_len:
        return s
    digest = hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cleaned = cleaned[: max(0, max_len - 9)].rstrip("._-")
    return f"{cleaned}-{digest}" if cleaned else f"x-{digest}"


def _make_id(data: bytes) -> str:
    return ID_PREFIX + hashlib.sha256(data).hexdigest()[:ID_HEX]


def file_source_id(path: Path) -> str:
    """Content-based id of a local file (falls back to its resolved path when unreadable)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return _make_id(b"path:" + os.fsencode(str(path)))
    return ID_PREFIX + h.hexdigest()[:ID_HEX]


def normalize_url(url: str) -> str:
    """Canonical form used for duplicate detection and the source id (raises ValueError)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {scheme!r}")
    host = parts.hostname  # lower-cased, brackets of IPv6 removed
    if not host:
        raise ValueError("URL has no host")
    port = parts.port  # raises ValueError on a bad port
    netloc = f"[{host}]" if ":" in host else host
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def url_source_id(url: str) -> str:
    return _make_id(normalize_url(url).encode("utf-8"))


def _strip_comment(line: str) -> str:
    s = line.strip()
    if not s or s.startswith("#"):
        return ""
    return _INLINE_COMMENT_RE.sub("", s).strip()


def _classify(entry: str, base_dir: Path, line_no: int) -> SourceSpec | str:
    """A SourceSpec, or the reason the entry is rejected."""
    if any(unicodedata.category(ch) == "Cc" for ch in entry):
        return "control character in entry"
    m = _SCHEME_RE.match(entry)
    if m:
        scheme = m.group(1).lower()
        if scheme not in _DEFAULT_PORTS:
            return (f"unsupported scheme '{scheme}:' (only http:// and https:// URLs or local file paths;"
                    " write ./name for a file whose name contains ':')")
        if not entry.lower().startswith(f"{scheme}://"):
            return f"malformed {scheme} URL (expected {scheme}://host/...)"
        if any(ch.isspace() for ch in entry):
            return "whitespace inside URL (percent-encode it as %20)"
        try:
            norm = normalize_url(entry)
        except ValueError as exc:
            return f"malformed URL: {exc}"
        return SourceSpec(_make_id(norm.encode("utf-8")), norm, "url", line_no, entry)
    p = Path(entry).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    p = Path(os.path.abspath(p))
    try:
        p = p.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        return f"cannot resolve path: {exc}"
    if p.is_dir():
        return "is a directory, not a media file"
    sid = file_source_id(p) if p.is_file() else _make_id(b"path:" + os.fsencode(str(p)))
    if not p.exists():
        log.warning("line %d: local file does not exist (the download step will report it): %s", line_no, p)
    return SourceSpec(sid, str(p), "file", line_no, entry)


def parse_url_list(path: str | os.PathLike) -> tuple[list[SourceSpec], list[InputLineError]]:
    """Parse a list file. Returns accepted sources (in list order) and per-line errors.

    Raises :class:`InputListError` only when the list file itself cannot be read.
    """
    list_path = Path(path).expanduser()
    try:
        raw = list_path.read_bytes()
    except OSError as exc:
        raise InputListError(f"cannot read URL list {list_path}: {exc.strerror or exc}") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    base_dir = Path(os.path.abspath(list_path)).parent
    specs: list[SourceSpec] = []
    errors: list[InputLineError] = []
    seen: dict[str, int] = {}  # source id or location -> first line
    for line_no, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(InputLineError(line_no, raw_line.decode("utf-8", "replace"), "not valid UTF-8"))
            continue
        entry = _strip_comment(line)
        if not entry:
            continue
        if len(entry) > MAX_LINE_CHARS:
            errors.append(InputLineError(line_no, entry[:200], f"entry longer than {MAX_LINE_CHARS} characters"))
            continue
        result = _classify(entry, base_dir, line_no)
        if isinstance(result, str):
            errors.append(InputLineError(line_no, entry, result))
            continue
        first = seen.get(result.source_id, seen.get(result.location))
        if first is not None:
            log.info("line %d duplicates line %d (%s); kept the first", line_no, first, result.source_id)
            continue
        seen[result.source_id] = line_no
        seen[result.location] = line_no
        specs.append(result)
    for err in errors:
        log.warning("URL list %s: %s", list_path, err)
    return specs, errors
