"""The dataset card of a build (report.html): its content, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from shv_toolkit.build.layout import BuildLayout
from shv_toolkit.build.report import SECTIONS, render_report
from shv_toolkit.config import BuildConfig
from shv_toolkit.manifest import io as manifest_io
from shv_toolkit.manifest.scores import SCORE_NAMES

from ...conftest import REPO

CHROMIUM = "/usr/bin/chromium"  # Debian's package; scripts/test.sh installs it when missing

# Loads the report in an iframe (file:// pages may read each other with --allow-file-access-from-files),
# so the report itself is tested unchanged: it runs no script and its Content-Security-Policy would refuse
# one. The iframe's load event comes before the harness's own, after which --dump-dom prints the DOM, so
# the verdict is written synchronously in that handler (an awaited promise may come after the dump).
HARNESS = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="verdict">pending</pre>
<iframe id="report" src="%s" style="width:1280px;height:900px"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const sections = [...doc.querySelectorAll("section")].map(s => ({
    id: s.id, height: s.getBoundingClientRect().height, heading: s.querySelector("h2")?.textContent}));
  document.getElementById("verdict").textContent = JSON.stringify({
    title: doc.title, sections,
    images: [...doc.images].map(img => ({alt: img.alt, complete: img.complete, w: img.naturalWidth,
                                         h: img.naturalHeight, hover: img.closest("[title]")?.title || ""})),
  });
});
</script></body></html>
"""


def _chromium(url: str, profile: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install chromium (scripts/test.sh does it as root)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", f"--user-data-dir={profile}", "--allow-file-access-from-files",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_report_in_headless_chromium(sample_build, tmp_path):
    """The sample build's report.html loads in Chromium without a console message (errors, blocked
    external loads), shows every section, and every image (12 histograms, the stills) decodes."""
    out, summary = sample_build
    report = out / "report.html"
    assert summary.report == str(report) and "report.html" in summary.render()
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS % report.as_uri())
    t0 = time.perf_counter()
    res = _chromium(harness.as_uri(), tmp_path / "profile")
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no error, no warning, no blocked load
    m = re.search(r'<pre id="verdict">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stdout[:500]
    verdict = json.loads(html.unescape(m.group(1)))
    assert verdict["title"].startswith("SHV build report")
    assert [(s["id"], s["heading"]) for s in verdict["sections"]] == list(SECTIONS)
    assert all(s["height"] > 40 for s in verdict["sections"]), verdict["sections"]
    imgs = verdict["images"]
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in imgs), imgs
    hists = [i for i in imgs if i["alt"].startswith("histogram of ")]
    assert [i["alt"].removeprefix("histogram of ") for i in hists] == list(SCORE_NAMES)
    clips = pd.read_parquet(out / "clips.parquet")
    stills = [i for i in imgs if i["alt"].startswith("clip ")]
    # the sample has 13 kept clips (all shown) and one dropped clip (shown under its reason)
    assert len(stills) == len(clips) == 14
    assert all(i["w"] == i["h"] == 128 for i in stills)
    for i in stills:
        cid = i["alt"].removeprefix("clip ")
        row = clips.set_index("clip_id").loc[cid]
        assert i["hover"].startswith(f"clip {cid}") and f"vocal_activity = {row['score_vocal_activity']:.4g}" in i["hover"]
        assert ("dropped: vocal_activity = 0.29 < 0.3" in i["hover"]) == (not row["keep"])
    assert seconds < 20, seconds


def test_report_content_matches_the_manifests(sample_build):
    out, summary = sample_build
    text = (out / "report.html").read_text()
    clips = pd.read_parquet(out / "clips.parquet")
    cfg = BuildConfig()
    # self-contained: every image inline, nothing fetched (and the CSP forbids it)
    assert re.findall(r'src="([a-z]+):', text) and set(re.findall(r'src="([a-z]+):', text)) == {"data"}
    assert "default-src 'none'" in text and "<script" not in text
    # every embedded image decodes in full (the browser test checks what the page shows)
    embedded = re.findall(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == len(SCORE_NAMES) + len(clips)
    for kind, b64 in embedded:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64, validate=True), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.std() > 5, kind
    assert cfg.config_hash() in text and '"crop_scale": 0.8' in html.unescape(text)
    for pkg in ("shv_toolkit", "mediapipe", "av", "opencv-python", "torch", "ffmpeg (PyAV)"):
        assert f"<td>{pkg}</td>" in text
    kept = clips[clips["keep"]]
    hours = (kept["end_s"] - kept["start_s"]).sum() / 3600
    assert f"<b class=\"ok\">{hours:.3f}</b>hours kept" in text
    assert "<b class=\"ok\">13</b>clips kept" in text and "<b class=\"ok\">5</b>sources ok" in text
    assert "<td>dropped: vocal_activity</td><td class=\"n\">1</td>" in text
    # per split: train 4 sources, test 1
    assert re.search(r"<td>train</td><td class=\"n\">4</td><td class=\"n\">10</td>", text)
    assert re.search(r"<td>test</td><td class=\"n\">1</td><td class=\"n\">3</td>", text)


def _rows(tmp: Path) -> Path:
    """A build directory with hand-made manifests: a failed source whose input line and error hold HTML,
    an empty source, a bad input line, clips dropped for several reasons (one not measured)."""
    src = manifest_io.read_rows(Path(__file__).resolve().parents[3] / "manifests/sample/sources.parquet")[:1]
    clips = manifest_io.read_rows(Path(__file__).resolve().parents[3] / "manifests/sample/clips.parquet")
    ok = dict(src[0])
    sid = ok["source_id"]
    own = [dict(c) for c in clips if c["source_id"] == sid]
    assert len(own) >= 3
    own[0].update(keep=False, drop_reason="crop_out_of_frame", drop_value=0.4, drop_threshold=0.25, video_path=None,
                  audio_path=None, vocals_path=None)
    own[1].update(keep=False, drop_reason="loudness_db", drop_value=math.nan, drop_threshold=-45.0,
                  score_loudness_db=math.nan, video_path=None, audio_path=None, vocals_path=None)
    failed = dict(ok, source_id="src-failed", url="<script>alert(1)</script>.mp4", status="failed",
                  error="HTTP Error 403: <b>Forbidden</b>", split=None, n_clips_total=0, n_clips_kept=0)
    empty = dict(ok, source_id="src-empty", status="empty", error="no clip kept (sharpness x2)", split=None)
    bad = dict(ok, source_id="line-00003", kind="invalid", url="ftp://x", status="failed",
               error="input line 3: unsupported scheme", split=None)
    rows = [ok, failed, empty, bad]
    for r in rows:
        for k in ("config_hash", "toolkit_version", "schema_version"):
            r.pop(k)
    for c in own:
        for k in ("config_hash", "toolkit_version", "schema_version"):
            c.pop(k)
    manifest_io.write_manifests(tmp, rows, own, "hash", "0")
    return tmp


def test_report_of_failures_escapes_text_and_works_without_stills(tmp_path):
    out = _rows(tmp_path)
    text = render_report(BuildLayout(out), BuildConfig(), "hash")
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;.mp4" in text
    assert "HTTP Error 403: &lt;b&gt;Forbidden&lt;/b&gt;" in text and "no clip kept (sharpness x2)" in text
    assert 'sources failed' in text and "bad input line" in text and "unsupported scheme" in text
    # every reason that occurs gets its row and its contact-sheet group; not measured is counted
    assert "<td>dropped: crop_out_of_frame</td><td class=\"n\">1</td>" in text
    assert "<td>dropped: loudness_db</td><td class=\"n\">1</td><td class=\"n\">33.3 %</td><td class=\"n\">1</td>" in text
    assert "Dropped: crop_out_of_frame (1 of 1)" in text and "Dropped: loudness_db (1 of 1)" in text
    assert "dropped: loudness_db = not measured" in text
    # no thumbnails in this directory and no clip files: placeholders, no broken image
    assert text.count('class="nostill"') == 3 and "data:image/jpeg" not in text


def test_report_of_an_empty_list(tmp_path):
    """A list with no source still gives a report (and the build its summary)."""
    from shv_toolkit.build import run_build

    lst = tmp_path / "list.txt"
    lst.write_text("# nothing yet\n")
    summary = run_build(lst, tmp_path / "out", BuildConfig(), progress=False)
    text = (tmp_path / "out" / "report.html").read_text()
    assert summary.report.endswith("report.html")
    assert "<b class=\"\">0</b>candidate clips" in text and "No clip was dropped." in text
    assert text.count("data:image/png") == len(SCORE_NAMES)


def test_test_script_installs_chromium_when_missing():
    script = (Path(__file__).resolve().parents[3] / "scripts" / "test.sh").read_text()
    assert "apt-get install -y" in script and "chromium" in script and "id -u" in script


def test_report_is_refreshed_on_resume_and_stills_come_from_mp4s_of_older_builds(sample_build, tmp_path):
    """A rerun writes the report again; a build directory without stills (made before they existed)
    shows the middle frame of each kept clip's mp4 and a placeholder for dropped clips."""
    from shv_toolkit.build import run_build

    out, _ = sample_build
    report = out / "report.html"
    report.unlink()
    summary = run_build(REPO / "manifests" / "sample" / "urls.txt", out, BuildConfig(), progress=False)
    assert summary.tasks == {} and report.is_file() and summary.report == str(report)  # nothing redone
    older = tmp_path / "older"
    older.mkdir()
    for name in ("sources", "clips"):
        shutil.copy(out / f"{name}.parquet", older)
    (older / "clips").symlink_to(out / "clips")  # the clips, but no work/<id>/thumbs
    text = render_report(BuildLayout(older), BuildConfig(), "hash")
    clips = pd.read_parquet(out / "clips.parquet")
    assert text.count("data:image/jpeg") == int(clips["keep"].sum()) and text.count('class="nostill"') == 1
    for b64 in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (128, 128, 3) and img.std() > 10
