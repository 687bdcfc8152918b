"""Step 2 of shv-build: bring every source onto disk and check it is usable media.

URLs go through yt-dlp's Python API (no subprocess, no shell): retries, socket timeout, a size cap
(``max_filesize`` plus a byte counter for servers that send no length), a duration cap (checked on
the site's metadata before downloading and on the file after), cookies, rate limit and sleep
interval, a tqdm progress bar, and imageio-ffmpeg's binary for merging separate video/audio
formats. Output names come only from the sanitised source id: ``<download_dir>/<source_id>.<ext>``.

Local files are not copied; they are checked in place.

Every file is then probed (PyAV) and must be: non-empty, within the size and duration caps, have a
video stream and an audio track, and be decodable at its start and near its end (a cut-off
download or a truncated file is refused). Failures raise :class:`DownloadFailed` (a
:class:`~shv_toolkit.core.errors.SourceError`) with a one-line message and the partial record.

Idempotence: after a URL source has passed every check, ``<source_id>.done.json`` is written
(atomically, last). A rerun finds the marker and the file and does not touch the network.
Without the marker yt-dlp is run again; it keeps a complete file it finds under the final name
(its partial downloads are ``*.part`` / ``*.temp.*`` files, which never count as complete) and
resumes or restarts partial ones. A downloaded file that fails the checks is deleted, so a rerun
tries again; the user's local files are never modified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shv_toolkit.config import DownloadConfig
from shv_toolkit.core.atomic import atomic_write_text
from shv_toolkit.core.errors import MediaError, SourceError, UsageError
from shv_toolkit.core.media import MediaInfo, decode_frames, probe, video_stream
from shv_toolkit.inputs import SourceSpec, safe_filename

log = logging.getLogger(__name__)

MB = 1024 * 1024
MARKER_SUFFIX = ".done.json"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PARTIAL_RE = re.compile(r"\.(part|ytdl|temp)(\.|$)|\.f[0-9A-Za-z_-]+\.[A-Za-z0-9]+$")


@dataclass
class SourceRecord:
    """What the build records per source (one row of ``sources.parquet``)."""

    source_id: str
    url: str  # the entry as written in the list
    kind: Literal["url", "file"]
    local_path: str | None = None  # downloaded file (URL) or the user's file (local path)
    title: str | None = None  # site metadata (URLs only); never used to build a path
    uploader: str | None = None
    channel: str | None = None
    duration_s: float | None = None  # probed from the file
    fps: float | None = None
    width: int | None = None  # displayed size (rotation applied)
    height: int | None = None
    has_audio: bool | None = None
    has_video: bool | None = None
    color_transfer: str | None = None  # probed transfer characteristic (e.g. smpte2084 = HDR PQ)
    license: str | None = None  # as the site states it, when it does
    webpage_url: str | None = None
    extractor: str | None = None  # yt-dlp extractor key ("Youtube", "Generic", ...); "local" for files
    status: Literal["ok", "failed"] = "failed"
    error: str | None = None  # one line
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DownloadFailed(SourceError):
    """A source could not be fetched or is not usable media. ``record`` has what was learnt."""

    def __init__(self, message: str, record: SourceRecord) -> None:
        super().__init__(message)
        record.status = "failed"
        record.error = message
        self.record = record


def one_line(text: object, limit: int = 300) -> str:
    """Collapse an error text to one clean line (no ANSI codes, no yt-dlp ``ERROR:`` prefix)."""
    s = _ANSI_RE.sub("", str(text))
    lines = [ln.strip() for ln in s.splitlines() if ln.strip()]
    s = lines[0] if lines else s.strip()
    s = re.sub(r"^(ERROR:\s*)+", "", s)
    s = "".join(ch if ch.isprintable() else " " for ch in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _meta_str(v: object, limit: int = 500) -> str | None:
    if v is None:
        return None
    s = "".join(ch if ch.isprintable() else " " for ch in str(v)).strip()
    return s[:limit] or None


# ------------------------------------------------------------------------------------ media checks


def _video_stream_duration(v) -> float | None:
    """The video stream's own duration: from the stream header (mp4) or a DURATION tag (mkv/webm)."""
    if v.duration and v.time_base:
        return float(v.duration * v.time_base)
    tag = (v.metadata or {}).get("DURATION")
    m = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", tag.strip()) if tag else None
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def _check_decodable(path: Path, info: MediaInfo) -> None:
    """Decode the first video and audio frames and video near the end (catches truncation)."""
    import av

    name = path.name
    try:
        with av.open(str(path)) as c:
            v = video_stream(c)
            if v is None:
                raise MediaError(f"no video stream: {name}")
            tb = float(v.time_base)
            t0 = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
            first = next(decode_frames(c, v), None)
            if first is None:
                raise MediaError(f"no decodable video frame: {name}")
            c.seek(0)
            a = c.streams.audio[0]
            if next(decode_frames(c, a), None) is None:
                raise MediaError(f"no decodable audio frame: {name}")
            vdur = _video_stream_duration(v)
            fps = info.fps or 25.0
            if vdur is not None:
                slack = max(1.0, 3.0 / fps)
            else:  # only the container's duration (may include a longer audio track)
                vdur = info.duration
                slack = max(3.0, 0.05 * vdur)
            if vdur <= 0:
                return
            # always seek: the audio probe above may have read past every video packet of a short file
            tail = max(0.0, vdur - 2.0)
            c.seek(int((tail + t0) / tb), stream=v, backward=True, any_frame=False)
            # the keyframe there must decode; the packets after it are only demuxed (their timestamps
            # show truncation): decoding up to a keyframe interval at 1080p cost 0.5 s per source
            last_t = None
            keyframe_ok = False
            for packet in c.demux(v):  # ends with an empty packet: the decoder's flush
                if not keyframe_ok:
                    try:
                        keyframe_ok = bool(packet.decode())
                    except av.error.InvalidDataError:  # a damaged packet is skipped, as in the analysis
                        if not packet.size:
                            raise
                if packet.size and packet.pts is not None:
                    t = packet.pts * tb - t0
                    last_t = t if last_t is None else max(last_t, t)
            if not keyframe_ok:
                last_t = None
    except av.FFmpegError as exc:
        raise MediaError(f"decoding failed in {name}: {one_line(exc)}") from exc
    need = vdur - slack
    if last_t is None or last_t < need:
        got = "no frame" if last_t is None else f"last frame at {last_t:.2f} s"
        raise MediaError(f"truncated or damaged: video decodes only partly ({got} of {vdur:.2f} s): {name}")


def check_media(path: str | os.PathLike, cfg: DownloadConfig) -> MediaInfo:
    """Probe ``path`` and enforce size/duration caps, video+audio presence and decodability.

    Raises :class:`MediaError` with a one-line reason.
    """
    p = Path(path)
    if not p.exists():
        raise MediaError(f"file not found: {p}")
    if not p.is_file():
        raise MediaError(f"not a regular file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise MediaError(f"empty file (0 bytes): {p.name}")
    cap = int(cfg.max_filesize_mb * MB)
    if size > cap:
        raise MediaError(f"too large: {size / MB:.1f} MB > cap {cfg.max_filesize_mb:g} MB (max_filesize_mb)")
    info = probe(p)
    if not info.has_video and not info.has_audio:
        raise MediaError(f"no audio or video stream: {p.name}")
    if not info.has_video:
        raise MediaError(f"audio-only: no video stream in {p.name}")
    if not info.has_audio:
        raise MediaError(f"video-only: no audio track in {p.name} (singing videos need their sound)")
    if not info.duration or info.duration <= 0:
        raise MediaError(f"unknown or zero duration: {p.name}")
    if info.duration > cfg.max_duration_s:
        raise MediaError(f"too long: {info.duration:.1f} s > cap {cfg.max_duration_s:g} s (max_duration_s)")
    if info.hdr and cfg.hdr == "reject":
        raise MediaError(
            f"HDR video ({info.color_transfer} transfer) in {p.name}: shv-build does not tone-map, so its "
            "colours would come out wrong; use the site's SDR version or set download.hdr: keep"
        )
    _check_decodable(p, info)
    return info


# ---------------------------------------------------------------------------------------- yt-dlp


_BENIGN_WARNINGS = ("Falling back on generic information extractor", "could be a direct video link")
# yt-dlp messages that deserve a plainer wording in the record
_PLAIN_ERRORS = (("Did not get any data blocks", "empty download (0 bytes received)"),)


def _ydl_error(exc: BaseException) -> str:
    msg = one_line(exc, limit=100_000)
    for needle, plain in _PLAIN_ERRORS:
        if needle in msg:
            return plain
    msg = re.sub(r"\s*\(caused by .*\)\s*$", "", msg)
    return one_line(f"download failed: {msg}")


class _YdlLogger:
    """Routes yt-dlp's messages to logging and keeps the recent ones to explain skips."""

    def __init__(self, source_id: str) -> None:
        self.sid = source_id
        self.recent: deque[str] = deque(maxlen=50)

    def debug(self, msg: str) -> None:
        self.recent.append(msg)
        log.debug("[%s] %s", self.sid, msg)

    def info(self, msg: str) -> None:
        self.debug(msg)

    def warning(self, msg: str) -> None:
        self.recent.append(msg)
        level = logging.INFO if any(b in msg for b in _BENIGN_WARNINGS) else logging.WARNING
        log.log(level, "[%s] yt-dlp: %s", self.sid, one_line(msg))

    def error(self, msg: str) -> None:
        self.recent.append(msg)
        log.debug("[%s] yt-dlp error: %s", self.sid, one_line(msg))


class _TooLarge(Exception):
    pass


def parse_cookies_from_browser(spec: str) -> tuple:
    """``BROWSER[+KEYRING][:PROFILE][::CONTAINER]`` exactly as yt-dlp's ``--cookies-from-browser``."""
    import optparse

    import yt_dlp

    try:
        opts = yt_dlp.parse_options(["--ignore-config", "--cookies-from-browser", spec])
    except (optparse.OptParseError, SystemExit, ValueError) as exc:
        reason = one_line(str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
        raise UsageError(f"invalid --cookies-from-browser value {spec!r}: {reason}") from exc
    return opts.ydl_opts["cookiesfrombrowser"]


def ydl_options(cfg: DownloadConfig, outtmpl: str, logger: _YdlLogger | None = None) -> dict[str, Any]:
    """The yt-dlp parameter dict for one source (see yt_dlp.YoutubeDL's docstring)."""
    import imageio_ffmpeg
    from yt_dlp.utils import parse_bytes

    opts: dict[str, Any] = {
        "format": cfg.format,
        "format_sort": list(cfg.format_sort),
        "outtmpl": {"default": outtmpl},
        "restrictfilenames": True,
        "windowsfilenames": True,
        "noplaylist": True,
        "retries": cfg.retries,
        "fragment_retries": cfg.retries,
        "extractor_retries": cfg.retries,
        "file_access_retries": cfg.retries,
        "socket_timeout": cfg.socket_timeout,
        "max_filesize": int(cfg.max_filesize_mb * MB),
        "continuedl": True,
        "overwrites": False,
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "consoletitle": False,
        "writethumbnail": False,
        "writesubtitles": False,
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
    }
    if logger is not None:
        opts["logger"] = logger
    if cfg.cookies:
        cookie_file = Path(cfg.cookies).expanduser()
        if not cookie_file.is_file():
            raise UsageError(f"cookies file not found: {cookie_file}")
        opts["cookiefile"] = str(cookie_file)
    if cfg.cookies_from_browser:
        opts["cookiesfrombrowser"] = parse_cookies_from_browser(cfg.cookies_from_browser)
    if cfg.rate_limit:
        rate = parse_bytes(str(cfg.rate_limit))
        if not rate:
            raise UsageError(f"invalid rate limit {cfg.rate_limit!r} (e.g. 500K, 2M)")
        opts["ratelimit"] = rate
    if cfg.sleep_interval:
        opts["sleep_interval"] = float(cfg.sleep_interval)
        if cfg.max_sleep_interval:
            opts["max_sleep_interval"] = max(float(cfg.max_sleep_interval), float(cfg.sleep_interval))
    return opts


def check_download_config(cfg: DownloadConfig) -> None:
    """Raise :class:`UsageError` for settings no source can work with (call once before a build)."""
    if cfg.max_filesize_mb <= 0 or cfg.max_duration_s <= 0:
        raise UsageError("download.max_filesize_mb and download.max_duration_s must be positive")
    if cfg.retries < 0 or cfg.socket_timeout <= 0:
        raise UsageError("download.retries must be >= 0 and download.socket_timeout > 0")
    ydl_options(cfg, "%(id)s.%(ext)s")  # cookies file, browser spec and rate limit


def _match_filter(cfg: DownloadConfig, reasons: list[str]):
    def check(info: dict, *, incomplete: bool = False) -> str | None:
        reason = None
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            reason = "live stream or upcoming premiere (only finished videos can be downloaded)"
        elif info.get("duration") and float(info["duration"]) > cfg.max_duration_s:
            reason = f"too long: {float(info['duration']):.1f} s > cap {cfg.max_duration_s:g} s (max_duration_s)"
        else:
            size = info.get("filesize") or info.get("filesize_approx")
            if size and size > cfg.max_filesize_mb * MB:
                reason = f"too large: {size / MB:.1f} MB > cap {cfg.max_filesize_mb:g} MB (max_filesize_mb)"
        if reason:
            reasons.append(reason)
        return reason

    return check


def _progress_hook(cfg: DownloadConfig, source_id: str, progress: bool):
    state: dict[str, Any] = {"bar": None}
    cap = cfg.max_filesize_mb * MB

    def hook(d: dict) -> None:
        from tqdm import tqdm

        done = d.get("downloaded_bytes") or 0
        if d.get("status") == "downloading" and done > cap:
            raise _TooLarge(f"too large: more than {cfg.max_filesize_mb:g} MB received (max_filesize_mb)")
        if not progress:
            return
        bar = state["bar"]
        if d.get("status") == "downloading":
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            if bar is None:
                bar = state["bar"] = tqdm(total=total, unit="B", unit_scale=True, leave=False,
                                          desc=f"download {source_id}")
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
        elif d.get("status") in ("finished", "error") and bar is not None:
            bar.close()
            state["bar"] = None

    return hook


def _download_url(spec: SourceSpec, download_dir: Path, cfg: DownloadConfig, rec: SourceRecord,
                  progress: bool) -> Path:
    import yt_dlp
    from yt_dlp.utils import DownloadError, YoutubeDLError

    stem = safe_filename(spec.source_id)
    logger = _YdlLogger(spec.source_id)
    opts = ydl_options(cfg, str(download_dir / f"{stem}.%(ext)s"), logger)
    reasons: list[str] = []
    opts["match_filter"] = _match_filter(cfg, reasons)
    opts["progress_hooks"] = [_progress_hook(cfg, spec.source_id, progress)]
    url = spec.location
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=False)
            if info is None:
                raise DownloadFailed(reasons[-1] if reasons else "no video information", rec)
            _fill_site_metadata(rec, info)
            if info.get("_type") in ("playlist", "multi_video"):
                n = len(list(info.get("entries") or []))
                raise DownloadFailed(f"URL is a playlist of {n} entries; list each video on its own line", rec)
            info = ydl.process_ie_result(info, download=True)
    except _TooLarge as exc:
        _remove_partials(download_dir, stem)
        raise DownloadFailed(str(exc), rec) from exc
    except (DownloadError, YoutubeDLError) as exc:
        raise DownloadFailed(_ydl_error(exc), rec) from exc
    except OSError as exc:
        raise DownloadFailed(f"download failed: {one_line(exc)}", rec) from exc
    if reasons:
        raise DownloadFailed(reasons[-1], rec)
    files = [d.get("filepath") for d in (info or {}).get("requested_downloads") or [] if d.get("filepath")]
    if not files:
        skipped = [m for m in logger.recent if "larger than max-filesize" in m]
        if skipped:
            raise DownloadFailed(f"too large: {one_line(skipped[-1]).replace('[download] ', '')}", rec)
        raise DownloadFailed("download produced no file", rec)
    out = Path(files[0]).resolve()
    if out.parent != download_dir.resolve() or not out.name.startswith(stem + "."):
        raise DownloadFailed(f"yt-dlp wrote an unexpected path {out.name!r}", rec)
    if not out.is_file():
        raise DownloadFailed("download produced no file", rec)
    return out


def _fill_site_metadata(rec: SourceRecord, info: dict) -> None:
    rec.title = _meta_str(info.get("title"))
    rec.uploader = _meta_str(info.get("uploader"))
    rec.channel = _meta_str(info.get("channel"))
    rec.license = _meta_str(info.get("license"))
    rec.webpage_url = _meta_str(info.get("webpage_url"), 2000)
    rec.extractor = _meta_str(info.get("extractor_key") or info.get("extractor"))


def _remove_partials(download_dir: Path, stem: str) -> None:
    for p in download_dir.glob(f"{stem}.*"):
        if _PARTIAL_RE.search(p.name[len(stem):]) and p.is_file():
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- API


def _marker_path(download_dir: Path, source_id: str) -> Path:
    return download_dir / f"{safe_filename(source_id)}{MARKER_SUFFIX}"


def _write_marker(path: Path, rec: SourceRecord, media: Path) -> None:
    data = {"file": media.name, "size": media.stat().st_size, "record": rec.to_dict()}
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _read_marker(path: Path, download_dir: Path) -> tuple[SourceRecord, Path] | None:
    try:
        data = json.loads(path.read_text())
        media = download_dir / Path(data["file"]).name
        if not media.is_file() or media.stat().st_size != int(data["size"]):
            return None
        fields = {f.name for f in dataclasses.fields(SourceRecord)}
        rec = SourceRecord(**{k: v for k, v in data["record"].items() if k in fields})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec, media


def _apply_probe(rec: SourceRecord, info: MediaInfo, path: Path) -> None:
    rec.local_path = str(path)
    rec.duration_s = round(float(info.duration), 4)
    rec.fps = float(info.fps) if info.fps else None
    rec.width, rec.height = info.width, info.height
    rec.has_audio, rec.has_video = info.has_audio, info.has_video
    rec.color_transfer = info.color_transfer
    rec.size_bytes = path.stat().st_size


def fetch_source(spec: SourceSpec, download_dir: str | os.PathLike, cfg: DownloadConfig,
                 progress: bool = True) -> SourceRecord:
    """Download (URL) or locate (file) one source and check it; returns a record with status "ok".

    Raises :class:`DownloadFailed` (a SourceError) with a one-line message when the source is not
    usable; ``exc.record`` holds what was learnt before the failure.
    """
    download_dir = Path(download_dir)
    rec = SourceRecord(source_id=spec.source_id, url=spec.original or spec.location, kind=spec.kind)
    if spec.kind == "file":
        path = Path(spec.location)
        rec.local_path = str(path)
        rec.extractor = "local"
        rec.title = _meta_str(path.stem)
        try:
            info = check_media(path, cfg)
        except MediaError as exc:
            raise DownloadFailed(str(exc), rec) from exc
        _apply_probe(rec, info, path)
        rec.status, rec.error = "ok", None
        return rec

    download_dir.mkdir(parents=True, exist_ok=True)
    marker = _marker_path(download_dir, spec.source_id)
    cached = _read_marker(marker, download_dir) if marker.is_file() else None
    if cached is not None:
        crec, media = cached
        try:
            info = check_media(media, cfg)  # caps may have changed since
        except MediaError as exc:
            raise DownloadFailed(str(exc), crec) from exc
        _apply_probe(crec, info, media)
        crec.url = rec.url
        crec.status, crec.error = "ok", None
        log.info("[%s] already downloaded: %s", spec.source_id, media.name)
        return crec
    marker.unlink(missing_ok=True)

    stem = safe_filename(spec.source_id)
    earlier = {p.name for p in download_dir.glob(f"{stem}.*")
               if p.is_file() and not p.name.endswith(MARKER_SUFFIX) and not _PARTIAL_RE.search(p.name[len(stem):])}
    path = _download_url(spec, download_dir, cfg, rec, progress)
    try:
        info = check_media(path, cfg)
    except MediaError as exc:
        path.unlink(missing_ok=True)  # our own download: remove it so a rerun tries again
        if path.name not in earlier:
            raise DownloadFailed(str(exc), rec) from exc
        # a file left under the final name by an earlier run that yt-dlp took as complete: fetch anew
        log.warning("[%s] existing %s failed its checks (%s); downloading again", spec.source_id, path.name, exc)
        path = _download_url(spec, download_dir, cfg, rec, progress)
        try:
            info = check_media(path, cfg)
        except MediaError as exc2:
            path.unlink(missing_ok=True)
            raise DownloadFailed(str(exc2), rec) from exc2
    _apply_probe(rec, info, path)
    rec.status, rec.error = "ok", None
    _write_marker(marker, rec, path)
    return rec
