"""Step 1: the URL / path list."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from shv_toolkit.core.errors import InputListError
from shv_toolkit.inputs import (
    SourceSpec,
    normalize_url,
    parse_url_list,
    safe_filename,
    url_source_id,
)

ID_RE = re.compile(r"^src-[0-9a-f]{16}$")


def _write(tmp_path: Path, text: str | bytes, name: str = "list.txt") -> Path:
    p = tmp_path / name
    if isinstance(text, str):
        p.write_text(text, encoding="utf-8")
    else:
        p.write_bytes(text)
    return p


def test_urls_comments_blank_and_duplicates(tmp_path: Path) -> None:
    lst = _write(tmp_path, "\ufeff# my singers\n\n"
                 "https://www.Example.com/watch?v=abc  # live take\n"
                 "   \n"
                 "HTTPS://WWW.EXAMPLE.COM:443/watch?v=abc#t=30\n"  # same video after normalisation
                 "http://example.com\n"
                 "https://example.com/watch?v=abc&list=1\n"
                 "http://127.0.0.1:8080/a%20b.mp4\n")
    specs, errors = parse_url_list(lst)
    assert errors == []
    assert [s.line_no for s in specs] == [3, 6, 7, 8]
    assert [s.location for s in specs] == [
        "https://www.example.com/watch?v=abc",
        "http://example.com/",
        "https://example.com/watch?v=abc&list=1",
        "http://127.0.0.1:8080/a%20b.mp4",
    ]
    assert all(s.kind == "url" for s in specs)
    assert specs[0].original == "https://www.Example.com/watch?v=abc"
    ids = [s.source_id for s in specs]
    assert all(ID_RE.match(i) for i in ids) and len(set(ids)) == 4
    # deterministic and defined as sha256 of the normalised URL
    expected = "src-" + hashlib.sha256(b"https://www.example.com/watch?v=abc").hexdigest()[:16]
    assert ids[0] == expected == url_source_id("https://WWW.example.com/watch?v=abc#frag")
    assert parse_url_list(lst)[0] == specs


@pytest.mark.parametrize(
    "line, reason",
    [
        ("file:///etc/passwd", "unsupported scheme 'file:'"),
        ("ftp://example.com/a.mp4", "unsupported scheme 'ftp:'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript:'"),
        ("data:video/mp4;base64,AAAA", "unsupported scheme 'data:'"),
        ("JavaScript:alert(1)", "unsupported scheme 'javascript:'"),
        ("rtmp://host/live", "unsupported scheme 'rtmp:'"),
        ("https:/example.com/x", "malformed https URL"),
        ("http://", "malformed URL: URL has no host"),
        ("http://example.com:99999/x", "malformed URL"),
        ("https://exa mple.com/x", "whitespace inside URL"),
    ],
)
def test_rejected_schemes_and_malformed_urls(tmp_path: Path, line: str, reason: str) -> None:
    lst = _write(tmp_path, f"https://ok.example/v\n{line}\n")
    specs, errors = parse_url_list(lst)
    assert [s.location for s in specs] == ["https://ok.example/v"]
    assert len(errors) == 1
    assert errors[0].line_no == 2 and errors[0].text == line
    assert reason in errors[0].reason
    assert "line 2" in str(errors[0])


def test_local_paths_relative_home_and_content_ids(tmp_path: Path, shared_media: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "lists"
    sub.mkdir()
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(shared_media / "single_face.mp4", media / "a.mp4")
    shutil.copy(shared_media / "single_face.mp4", media / "copy of a.mp4")  # same bytes, other name
    shutil.copy(shared_media / "lena.wav", media / "take#2.wav")
    monkeypatch.setenv("HOME", str(tmp_path))
    lst = _write(sub, "../media/a.mp4\n"
                 "~/media/take#2.wav\n"
                 f"{media / 'a.mp4'}\n"  # same resolved path as line 1
                 "../media/copy of a.mp4\n"  # same content as line 1
                 "../media\n"  # a directory
                 "./missing:file.mp4\n")
    specs, errors = parse_url_list(lst)
    assert [(e.line_no, e.reason) for e in errors] == [(5, "is a directory, not a media file")]
    assert [s.line_no for s in specs] == [1, 2, 6]
    a, wav, missing = specs
    assert a.kind == wav.kind == missing.kind == "file"
    assert a.location == str((media / "a.mp4").resolve())
    assert wav.location == str((media / "take#2.wav").resolve())
    assert missing.location == str((sub / "missing:file.mp4").resolve())
    digest = hashlib.sha256((shared_media / "single_face.mp4").read_bytes()).hexdigest()
    assert a.source_id == "src-" + digest[:16]
    # moving the file keeps its id
    moved = tmp_path / "elsewhere.mp4"
    shutil.move(media / "a.mp4", moved)
    specs2, _ = parse_url_list(_write(tmp_path, f"{moved}\n", "l2.txt"))
    assert specs2[0].source_id == a.source_id
    # a missing file falls back to a path-based id, still deterministic and safe
    assert ID_RE.match(missing.source_id)
    assert parse_url_list(lst)[0][-1].source_id == missing.source_id


def test_bad_bytes_long_lines_and_control_chars(tmp_path: Path) -> None:
    lst = _write(tmp_path, b"https://a.example/1\n\xff\xfe bad\nhttps://a.example/\x07x\n"
                 + b"https://a.example/" + b"x" * 9000 + b"\nhttps://a.example/2\r\n")
    specs, errors = parse_url_list(lst)
    assert [s.location for s in specs] == ["https://a.example/1", "https://a.example/2"]
    assert [(e.line_no, e.reason.split(" (")[0]) for e in errors] == [
        (2, "not valid UTF-8"),
        (3, "control character in entry"),
        (4, "entry longer than 8192 characters"),
    ]


def test_unreadable_list_raises(tmp_path: Path) -> None:
    with pytest.raises(InputListError, match="cannot read URL list"):
        parse_url_list(tmp_path / "nope.txt")
    with pytest.raises(InputListError):
        parse_url_list(tmp_path)  # a directory


def test_normalize_url() -> None:
    assert normalize_url("HTTP://Example.COM:80") == "http://example.com/"
    assert normalize_url("https://[::1]:8443/x?b=2&a=1#f") == "https://[::1]:8443/x?b=2&a=1"
    assert normalize_url("https://u:p@h.example/") == "https://u:p@h.example/"
    with pytest.raises(ValueError):
        normalize_url("ftp://h/")


@pytest.mark.parametrize(
    "s",
    ["src-0123456789abcdef", "a b.mp4", "$(rm -rf ~);`x`'\"", "../../etc/passwd", "ünïcødé 歌手", "",
     ".hidden", "x" * 500, "-rf"],
)
def test_safe_filename(s: str) -> None:
    out = safe_filename(s)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", out)
    assert not out.startswith((".", "-"))
    assert len(out) <= 100
    assert "/" not in out and out not in (".", "..")
    assert safe_filename(s) == out
    if s == "src-0123456789abcdef":
        assert out == s  # already-safe ids are kept as they are


def test_safe_filename_keeps_distinct_inputs_distinct() -> None:
    assert safe_filename("a_b") == "a_b"
    assert safe_filename("a b") != "a_b" and safe_filename("a b").startswith("a_b-")
    assert safe_filename("a b") != safe_filename("a?b")


def test_spec_is_frozen() -> None:
    s = SourceSpec("src-0", "http://x/", "url", 1)
    with pytest.raises(AttributeError):
        s.source_id = "y"  # type: ignore[misc]
