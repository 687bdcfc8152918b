"""``shv-metrics`` on two small directories of real videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmark.cli import metrics_main
from benchmark.metrics import METRICS
from benchmark.metrics.base import Clip, align
from benchmark.metrics.cpbd import cpbd_clip
from benchmark.metrics.psnr import psnr_clip
from benchmark.metrics.ssim import ssim_clip
from benchmark.protocol import get_protocol
from shv_toolkit.core import media


@pytest.fixture(scope="module")
def dirs(shared_media, tmp_path_factory) -> dict[str, Path]:
    """gt/{x,y}.mp4 from two real face videos; gen/x.mp4 blurred, gen/y.mov shifted (names match by stem)."""
    root = tmp_path_factory.mktemp("cli")
    gt, gen = root / "gt", root / "gen"
    gt.mkdir()
    gen.mkdir()
    x = media.read_video(shared_media / "single_face.mp4", fps=25, start=0.5, end=1.1)
    y = media.read_video(shared_media / "franck.mp4", fps=25, start=5.0, end=5.6)
    x = np.stack([cv2.resize(f, (192, 108), interpolation=cv2.INTER_AREA) for f in x])
    y = np.stack([cv2.resize(f, (180, 144), interpolation=cv2.INTER_AREA) for f in y])
    media.write_video(gt / "x.mp4", x, fps=25)
    media.write_video(gt / "y.mp4", y, fps=25)
    media.write_video(gen / "x.mp4", np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in x]), fps=25)
    media.write_video(gen / "y.mov", np.roll(y, 3, axis=2), fps=25)
    return {"gt": gt, "gen": gen, "root": root}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = metrics_main([*argv, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_per_clip_matches_direct_computation(dirs, capsys):
    code, out, _ = run(
        capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "--metrics", "ssim,psnr,cpbd", "--json", "--per-clip"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["protocol"]["name"] == "shv-v1"
    assert doc["protocol"]["fingerprint"] == get_protocol("shv-v1").fingerprint()
    assert set(doc["metrics"]) == {"ssim", "psnr", "cpbd"} and doc["n_scored"] == 2 and doc["ok"]
    for stem, gen_name in (("x", "x.mp4"), ("y", "y.mov")):
        g, r = align(Clip.load(dirs["gen"] / gen_name), Clip.load(dirs["gt"] / f"{stem}.mp4"))
        assert doc["metrics"]["ssim"]["per_clip"][stem] == pytest.approx(ssim_clip(g.frames, r.frames), abs=1e-9)
        assert doc["metrics"]["psnr"]["per_clip"][stem] == pytest.approx(psnr_clip(g.frames, r.frames), abs=1e-9)
        assert doc["metrics"]["cpbd"]["per_clip"][stem] == pytest.approx(cpbd_clip(g.frames), abs=1e-9)
        assert 0.2 < doc["metrics"]["ssim"]["per_clip"][stem] < 0.99
    ssim = doc["metrics"]["ssim"]
    assert ssim["higher_is_better"] is True and ssim["value"] == pytest.approx(np.mean(list(ssim["per_clip"].values())))


def test_table_on_two_files_identical_clip(dirs, capsys, tmp_path):
    out_json = tmp_path / "res" / "r.json"
    gt = str(dirs["gt"] / "x.mp4")
    code, out, _ = run(capsys, "-g", gt, "-r", gt, "-m", "ssim,psnr", "--per-clip", "-o", str(out_json))
    assert code == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "1.0000" in lines["ssim"] and "100.0000" in lines["psnr"]
    assert "↑" in lines["ssim"] or "higher" in lines["ssim"]
    assert "per clip:" in out and "x" in lines
    saved = json.loads(out_json.read_text())
    assert saved["metrics"]["psnr"]["value"] == 100.0 and saved["metrics"]["psnr"]["extras"]["uncapped"] == "inf"


def test_unmatched_and_unavailable_metrics_exit_1(dirs, capsys, tmp_path, monkeypatch):
    gen = tmp_path / "gen"
    shutil.copytree(dirs["gen"], gen)
    shutil.copy(gen / "x.mp4", gen / "orphan.mp4")
    monkeypatch.setitem(METRICS, "ghost", "benchmark.metrics.no_such_module:Ghost")
    code, out, err = run(capsys, "-g", str(gen), "-r", str(dirs["gt"]), "-m", "psnr,ghost", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["unmatched"]["generated"] == [str(gen / "orphan.mp4")]
    assert doc["metrics"]["psnr"]["n_clips"] == 2
    assert doc["metrics"]["ghost"]["value"] is None and "no_such_module" in doc["missing"]["ghost"]
    assert "incomplete" in err
    code, out, err = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "-m", "psnr,ghost", "--strict")
    assert code == 1 and "ghost" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-m", "ssim,bogus"], "unknown metric"),
        (["-m", "ssim", "--protocol", "nope"], "unknown protocol"),
        (["-m", "ssim", "--syncnet-weights", "/nonexistent/syncnet_v2.model"], "no such file"),
    ],
)
def test_usage_errors_exit_2(dirs, capsys, argv, message):
    code, _, err = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), *argv)
    assert code == 2 and message in err


def test_path_usage_errors_exit_2(dirs, capsys, tmp_path):
    code, _, err = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"] / "x.mp4"))
    assert code == 2 and "both be files or both be directories" in err
    code, _, err = run(capsys, "-g", str(tmp_path / "missing"), "-r", str(dirs["gt"]))
    assert code == 2 and "no such file" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "-g", str(tmp_path / "empty"), "-r", str(dirs["gt"]))
    assert code == 2 and "share a file name" in err
    assert metrics_main(["--generated", "x"]) == 2  # argparse: --ground-truth missing
    capsys.readouterr()


def test_singer_paper_protocol_reports_the_wrap_variant_beside_psnr(dirs, capsys):
    from benchmark.metrics.base import resize_frames

    code, out, _ = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "--metrics", "psnr", "--json",
                       "--per-clip", "--protocol", "singer-paper")
    assert code == 0
    doc = json.loads(out)
    assert doc["protocol"]["name"] == "singer-paper"
    assert doc["protocol"]["fingerprint"] == get_protocol("singer-paper").fingerprint()
    assert set(doc["metrics"]) == {"psnr", "psnr_uint8_wrap"}
    assert doc["metrics"]["psnr"]["n_scored"] == 2 and doc["metrics"]["psnr"]["n_failed"] == 0
    for stem, gen_name in (("x", "x.mp4"), ("y", "y.mov")):
        r = resize_frames(Clip.load(dirs["gt"] / f"{stem}.mp4").frames, (512, 512))  # the protocol's size
        g = resize_frames(Clip.load(dirs["gen"] / gen_name).frames, (512, 512))[: len(r)]
        r = r[: len(g)]
        wrap = np.mean([10 * np.log10(255.0**2 / np.mean((a - b) ** 2)) for a, b in zip(g, r, strict=True)])
        assert doc["metrics"]["psnr_uint8_wrap"]["per_clip"][stem] == pytest.approx(wrap, rel=1e-12)
        assert doc["metrics"]["psnr"]["per_clip"][stem] == pytest.approx(psnr_clip(g, r), rel=1e-12)
    code, out, _ = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "--metrics", "psnr")
    assert code == 0 and "psnr_uint8_wrap" not in out and "scored" in out


def test_intervals_over_clips_are_seeded_and_match_resampling_by_hand(dirs, capsys):
    argv = ["-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "-m", "ssim,psnr", "--json", "--per-clip",
            "--bootstrap", "300", "--bootstrap-seed", "7"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    doc = json.loads(out)
    assert "300 resamples, seed 7" in doc["ci"]
    ids = ["x", "y"]  # clips in pair order
    draws = np.random.default_rng(7).integers(0, 2, size=(300, 2))
    for name in ("ssim", "psnr"):
        vals = np.array([doc["metrics"][name]["per_clip"][c] for c in ids])
        expected = np.quantile(vals[draws].mean(axis=1), [0.025, 0.975])
        assert doc["intervals"][name] == pytest.approx(list(expected), rel=1e-12)
    assert json.loads(run(capsys, *argv)[1])["intervals"] == doc["intervals"]  # reproducible
    code, out, _ = run(capsys, "-g", str(dirs["gen"]), "-r", str(dirs["gt"]), "-m", "psnr", "--bootstrap", "0",
                       "--json")
    assert json.loads(out)["intervals"] == {} and json.loads(out)["ci"] is None
