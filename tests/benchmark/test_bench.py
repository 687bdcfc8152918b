"""shv-bench end to end on the bundled real sample (the session's `sample_build`): ground-truth, static and
external (degraded copies) into one output directory, then the leaderboard's properties."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from benchmark import bench_cli, runner
from benchmark.evaluate import evaluate
from benchmark.leaderboard import TABLE1, read_leaderboard
from benchmark.protocol import get_protocol
from benchmark.runner import BenchConfig, run_bench
from shv_toolkit.core import media
from shv_toolkit.manifest.io import read_rows

METRICS = ["ssim", "psnr", "cpbd", "lmd", "lse", "diversity", "bas"]


def _degrade(frames: np.ndarray) -> np.ndarray:
    """Gaussian blur, sigma 2 px (blur only: CPBD counts noise as sharp edges, so noise would raise it)."""
    return np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames])


@pytest.fixture(scope="module")
def bench(sample_build, tmp_path_factory):
    """One output directory with the three rows; the external directory lacks the last clip's video and
    holds one video that matches no clip."""
    build, _ = sample_build
    manifest = build / "test.parquet"
    rows = read_rows(manifest)
    assert len(rows) >= 3
    tmp = tmp_path_factory.mktemp("bench")
    out, videos = tmp / "out", tmp / "degraded"
    for r in rows[:-1]:
        src = build / r["video_path"]
        # crf 0: x264 at crf 18 adds block edges that CPBD counts as sharp (re-encoding the ground truth
        # at crf 18 raises its CPBD from ~0.066 to ~0.089), which would hide the blur
        media.write_video(videos / f"{r['clip_id']}.mp4", _degrade(media.read_video(src)),
                          audio=media.read_audio(src), crf=0)
    shutil.copy(build / rows[0]["video_path"], videos / "not-a-test-clip.mp4")
    results = {}
    for method, opts in [("ground-truth", {}), ("static", {}), ("external", {"videos": videos, "name": "degraded"})]:
        cfg = BenchConfig(method=method, manifest=manifest, out=out, metrics=METRICS, method_options=opts,
                          progress=False)
        results[method] = run_bench(cfg)
    return {"out": out, "manifest": manifest, "rows": rows, "results": results, "videos": videos}


def _row(board: pd.DataFrame, method: str) -> pd.Series:
    sub = board[(board["method"] == method) & (board["source"] == "measured")]
    assert len(sub) == 1, f"{method}: {len(sub)} rows"
    return sub.iloc[0]


def test_leaderboard_rows_and_column_order(bench):
    board = read_leaderboard(bench["out"])
    assert list(board["method"]) == ["ground-truth", "static", "degraded"]
    header = (bench["out"] / "leaderboard.csv").read_text().splitlines()[0].split(",")
    titles = [c.title for c in TABLE1]
    assert [h for h in header if h in titles] == titles  # Table 1 order
    for col in ("n_clips", "protocol", "extractor_hashes", "toolkit_version", "date", "missing"):
        assert col in header
    gt, static = _row(board, "ground-truth"), _row(board, "static")
    assert gt["SSIM"] == pytest.approx(1.0) and gt["LMD"] == pytest.approx(0.0)
    assert gt["n_clips"] == len(bench["rows"]) and gt["protocol"] == "shv-v1"
    assert static["SSIM"] < 0.95 and static["LMD"] > 0.5


def test_ground_truth_beats_static_on_diversity(bench):
    board = read_leaderboard(bench["out"])
    gt, static = _row(board, "ground-truth"), _row(board, "static")
    assert gt["Diversity"] > 3 * static["Diversity"]
    per_clip = pd.read_parquet(bench["out"] / "per_clip.parquet")
    d = per_clip.pivot(index="clip_id", columns="method", values="diversity")
    assert (d["ground-truth"] > d["static"]).all()
    # the static videos really repeat the reference (first ground-truth) frame, with the driving audio
    rec = next(r for r in bench["results"]["static"].records if r["clip_id"] == bench["rows"][0]["clip_id"])
    frames = media.read_video(rec["generated_video"])
    gt_first = media.read_video(bench["manifest"].parent / bench["rows"][0]["video_path"])[0]
    assert len(frames) == bench["rows"][0]["n_frames"]
    assert np.abs(frames.astype(int) - gt_first.astype(int)).mean() < 3  # x264 crf 18
    assert media.probe(rec["generated_video"]).has_audio


def test_degraded_copies_score_lower(bench):
    per_clip = pd.read_parquet(bench["out"] / "per_clip.parquet")
    scored = [r["clip_id"] for r in bench["rows"][:-1]]
    for metric in ("ssim", "psnr", "cpbd"):
        v = per_clip.pivot(index="clip_id", columns="method", values=metric).loc[scored]
        assert (v["degraded"] < v["ground-truth"]).all(), metric
    board = read_leaderboard(bench["out"])
    gt, deg = _row(board, "ground-truth"), _row(board, "degraded")
    for col in ("SSIM", "PSNR", "CPBD"):
        assert deg[col] < gt[col]


def test_lse_is_an_empty_cell_with_its_reason(bench):
    text = (bench["out"] / "leaderboard.csv").read_text().splitlines()
    header = text[0].split(",")
    import csv

    for rec in csv.DictReader(text):
        assert rec["LSE-D"] == "" and rec["LSE-C"] == "", rec  # empty, never 0
        assert "LSE-D, LSE-C: weights missing" in rec["missing"] and "syncnet_v2.model" in rec["missing"]
        assert "FVD: not requested" in rec["missing"]
        assert rec["SSIM"] != ""
    assert "missing" in header
    md = (bench["out"] / "leaderboard.md").read_text()
    assert "syncnet_v2.model" in md


def test_missing_external_video_is_listed(bench):
    res = bench["results"]["external"]
    last = bench["rows"][-1]["clip_id"]
    assert list(res.failures) == [last]
    assert "no video for clip" in res.failures[last]["generate"]
    assert res.row["n_failed"] == 1 and res.row["n_scored"] == len(bench["rows"]) - 1
    notes = res.input_notes["videos matching no test clip (not scored)"]
    assert [Path(p).name for p in notes] == ["not-a-test-clip.mp4"]
    per_clip = pd.read_parquet(bench["out"] / "per_clip.parquet")
    failed = per_clip[(per_clip["method"] == "degraded") & (per_clip["status"] == "failed")]
    assert list(failed["clip_id"]) == [last] and "no video" in failed["errors"].iloc[0]
    html = (bench["out"] / "report.html").read_text()
    assert last in html and "not-a-test-clip.mp4" in html
    summary = json.loads((bench["out"] / "runs" / "degraded__{}__shv-v1.json".format(
        res.row["dataset"])).read_text())
    assert last in summary["failed_clips"]


def test_row_equals_single_process_evaluation(bench):
    """Merging the cached one-clip shards gives exactly what one evaluate() pass over the pairs gives."""
    res = bench["results"]["external"]
    pairs = [(r["generated_video"], r["ground_truth_video"]) for r in res.records if r["generated_video"]]
    direct = evaluate(pairs, [m for m in METRICS if m != "lse"], "shv-v1", progress=False)
    for name, r in direct.results.items():
        mine = res.results[name]
        assert mine.value == pytest.approx(r.value, rel=1e-12, abs=1e-12), name
        assert mine.per_clip == pytest.approx(r.per_clip, rel=1e-12, abs=1e-12), name


def test_rerun_replaces_row_and_uses_cache(bench, monkeypatch):
    out = bench["out"]
    before = read_leaderboard(out)
    calls = []
    real = runner.fresh_shard

    def counting(template):
        calls.append(template.name)
        return real(template)

    monkeypatch.setattr(runner, "fresh_shard", counting)
    res = run_bench(BenchConfig(method="static", manifest=bench["manifest"], out=out, metrics=METRICS,
                                progress=False))
    assert res.n_cached == len(bench["rows"]) and res.n_computed == 0
    assert all(r["computed"] == [] for r in res.records)
    after = read_leaderboard(out)
    assert len(after) == len(before) and list(after["method"]) == list(before["method"])
    assert (after["method"] == "static").sum() == 1
    value_cols = [c.title for c in TABLE1]
    pd.testing.assert_frame_equal(after[value_cols], before[value_cols])
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    assert (per_clip["method"] == "static").sum() == len(bench["rows"])


def test_resume_after_interruption_computes_only_missing_clips(bench, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = BenchConfig(method="static", manifest=bench["manifest"], out=out, metrics=["ssim", "psnr"],
                      progress=False)
    real = runner.process_clip
    seen = []

    def interrupted(job, ctx, item):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(item.clip_id)
        return real(job, ctx, item)

    monkeypatch.setattr(runner, "process_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg)
    assert not (out / "leaderboard.csv").exists()
    monkeypatch.setattr(runner, "process_clip", real)
    res = run_bench(cfg)
    assert res.n_cached == 2 and res.n_computed == len(bench["rows"]) - 2
    computed = [r["clip_id"] for r in res.records if r["computed"]]
    assert computed == [r["clip_id"] for r in bench["rows"][2:]]
    # adding a metric computes only that metric on the cached clips
    res2 = run_bench(BenchConfig(method="static", manifest=bench["manifest"], out=out,
                                 metrics=["ssim", "psnr", "diversity"], progress=False))
    assert all(r["computed"] == ["diversity"] for r in res2.records)
    assert res2.row["SSIM"] == res.row["SSIM"]
    static = read_leaderboard(bench["out"])
    assert res2.row["Diversity"] == pytest.approx(_row(static, "static")["Diversity"], rel=1e-12)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_workers_give_the_same_row(bench, tmp_path, engine):
    """Clips on 2 worker processes (local pool, or a private Ray instance on 127.0.0.1 started and
    stopped by the run): the row merged from the workers' metric states equals the sequential one."""
    res = run_bench(BenchConfig(method="static", manifest=bench["manifest"], out=tmp_path / "out",
                                metrics=["ssim", "psnr", "diversity"], workers=2, engine=engine, progress=False))
    seq = _row(read_leaderboard(bench["out"]), "static")
    for col in ("SSIM", "PSNR", "Diversity"):
        assert res.row[col] == pytest.approx(seq[col], rel=1e-12), col
    assert res.row["n_clips"] == seq["n_clips"]


def test_unreadable_external_video_is_a_clip_error(bench, tmp_path):
    videos = tmp_path / "vids"
    videos.mkdir()
    cid = bench["rows"][0]["clip_id"]
    (videos / f"{cid}.mp4").write_bytes(b"this is not a video")
    res = run_bench(BenchConfig(method="external", method_options={"videos": videos, "name": "broken"},
                                manifest=bench["manifest"], out=tmp_path / "out", metrics=["ssim"], limit=1,
                                progress=False))
    assert list(res.failures) == [cid] and "load" in res.failures[cid]
    assert res.row["SSIM"] is None and "failed on every clip" in res.row["missing"]


def test_report_html_is_self_contained_with_stills(bench):
    html = (bench["out"] / "report.html").read_text()
    n = len(bench["rows"])  # clips shown: ground truth + static for each, degraded for all but the missing one
    assert html.count("data:image/jpeg;base64,") == 3 * n - 1
    assert "src=\"http" not in html and "src='http" not in html
    assert "SSIM↑" in html and "degraded" in html
    png = (bench["out"] / "leaderboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] > 500 and img.shape[1] > 800


def test_fvd_on_two_clips(sample_build, tmp_path):
    """FVD through the bench: ground truth against itself is ~0, the ground-truth side's window features are
    computed once (cached by frame checksum), and the row is the Frechet distance of all windows."""
    from benchmark.metrics.fvd import FVD

    build, _ = sample_build
    out = tmp_path / "out"
    code = bench_cli.main(["--method", "ground-truth", "--manifest", str(build / "test.parquet"), "--out", str(out),
                           "--metrics", "fvd", "--limit", "2", "--fvd-stride", "16", "--no-progress"])
    assert code == 0
    board = read_leaderboard(out)
    row = board.iloc[0]
    assert row["protocol"] == "shv-v1[fvd_stride=16]"
    assert row["FVD"] == pytest.approx(0.0, abs=1e-3)
    assert "i3d" in row["extractor_hashes"]
    feats = sorted((out / "cache" / "features").glob("*.npy"))
    assert len(feats) == 2  # generated side == ground-truth side: one file per clip
    ref = FVD(protocol=runner.protocol_with_overrides("shv-v1", fvd_stride=16))
    for f in feats:
        x = np.load(f)
        assert x.shape == (3, 400)
        ref.update_features(x, x)
    assert ref.compute().value == pytest.approx(row["FVD"], abs=1e-9)
    assert not math.isnan(row["FVD"])


def test_singer_paper_rows_beside_shv_v1_with_intervals_and_paper_tables(bench, tmp_path):
    """The static method under singer-paper: its own table, LMD = 20 x shv-v1's per-point LMD on the same
    512x512 clips, the wrap-around column beside PSNR, seeded intervals, and the paper's tables."""
    out = tmp_path / "out"
    shutil.copytree(bench["out"], out, ignore=shutil.ignore_patterns("cache", "videos"))
    metrics = ["ssim", "psnr", "lmd"]
    cfg = BenchConfig(method="static", manifest=bench["manifest"], out=out, metrics=metrics, progress=False,
                      protocol="singer-paper", with_paper_rows=True, bootstrap_samples=200)
    first = run_bench(cfg)
    board = read_leaderboard(out)
    measured = board[board["source"] == "measured"]
    assert sorted(set(measured["protocol"])) == ["shv-v1", "singer-paper"]
    v1 = measured[(measured["method"] == "static") & (measured["protocol"] == "shv-v1")].iloc[0]
    paper = measured[(measured["method"] == "static") & (measured["protocol"] == "singer-paper")].iloc[0]
    # LMD summed over the 20 mouth points = 20 x shv-v1's per-point mean on the same landmarks, i.e. with
    # singer-paper's detector setting (landmark_upsample, LMDMeter's) rather than shv-v1's own
    same_landmarks = runner.protocol_with_overrides("shv-v1", landmark_upsample=get_protocol("singer-paper").landmark_upsample)
    ref = run_bench(BenchConfig(method="static", manifest=bench["manifest"], out=tmp_path / "ref", metrics=["lmd"],
                                progress=False, protocol=same_landmarks, bootstrap_samples=0))
    assert paper["LMD"] == pytest.approx(20 * ref.row["LMD"], rel=1e-9)
    assert paper["PSNR"] == pytest.approx(v1["PSNR"], rel=1e-12) and paper["PSNR-uint8-wrap"] > paper["PSNR"]
    assert math.isnan(v1["PSNR-uint8-wrap"])
    per_clip = pd.read_parquet(out / "per_clip.parquet")
    mine = per_clip[(per_clip["method"] == "static") & (per_clip["protocol"] == "singer-paper")]
    for col, name in (("SSIM", "ssim"), ("PSNR-uint8-wrap", "psnr_uint8_wrap"), ("LMD", "lmd")):
        vals = mine[name].to_numpy(dtype=float)
        assert paper[col] == pytest.approx(vals.mean(), rel=1e-12)
        # the interval from resampling the per-clip values by hand with the same seeded draws
        draws = np.random.default_rng(0).integers(0, len(vals), size=(200, len(vals)))
        reps = vals[draws].mean(axis=1)
        assert (paper[f"{col}_lo"], paper[f"{col}_hi"]) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert "200 resamples, seed 0" in paper["ci"]
    again = run_bench(cfg)  # from the cache: the same intervals
    assert again.row["LMD_lo"] == first.row["LMD_lo"] and again.row["SSIM_hi"] == first.row["SSIM_hi"]
    md = (out / "leaderboard.md").read_text()
    assert "### Protocol shv-v1" in md and "### Protocol singer-paper" in md
    assert "### SINGER paper Table 1, SHV" in md and "### SINGER paper Table 5, SingingHead" in md
    assert set(board[board["source"] == "paper"]["table"]) == {"Table 1", "Table 3", "Table 5"}


def test_cli_help_and_list_methods(capsys):
    assert bench_cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--method", "--manifest", "--with-paper-rows", "--videos", "--checkpoint", "--workers",
                 "leaderboard.csv", "exit status"):
        assert word in text
    assert bench_cli.main(["--list-methods"]) == 0
    text = capsys.readouterr().out
    for name in ("ground-truth", "static", "external", "singer", "singer-no-msm", "singer-no-sfm", "singer-no-both"):
        assert f"  {name} " in text


def test_cli_usage_errors(sample_build, tmp_path, capsys):
    manifest = str(sample_build[0] / "test.parquet")
    assert bench_cli.main(["--manifest", manifest, "--out", str(tmp_path)]) == 2
    assert bench_cli.main(["--method", "nope", "--manifest", manifest, "--out", str(tmp_path)]) == 2
    assert bench_cli.main(["--method", "static", "--manifest", manifest, "--out", str(tmp_path),
                           "--metrics", "ssim,bogus"]) == 2
    assert bench_cli.main(["--method", "external", "--manifest", manifest, "--out", str(tmp_path)]) == 2
    assert "needs --videos" in capsys.readouterr().err
    assert bench_cli.main(["--method", "static", "--manifest", str(tmp_path / "none.parquet"),
                           "--out", str(tmp_path)]) == 2


def test_cli_singer_fails_clearly_without_the_inference_api(sample_build, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "singer_model.infer", None)  # import fails, as before the API lands
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    code = bench_cli.main(["--method", "singer-no-msm", "--checkpoint", str(ckpt), "--manifest",
                           str(sample_build[0] / "test.parquet"), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "singer_model.infer" in err and "generate_video" in err
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


def test_singer_with_a_tiny_checkpoint_produces_rows(sample_build, tmp_path):
    """shv-bench --method singer (and an ablation) with a real, tiny, randomly initialised checkpoint
    written in the published formats: generation, metrics and a leaderboard row per method."""
    import torch

    from singer_model.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    manifest = str(sample_build[0] / "test.parquet")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: per-op overhead dominates
    try:
        for method in ("singer", "singer-no-both"):
            code = bench_cli.main(["--method", method, "--checkpoint", str(ckpt), "--manifest", manifest,
                                   "--out", str(out), "--limit", "1", "--metrics", "ssim,psnr",
                                   "--steps", "2", "--no-progress"])
            assert code == 0
    finally:
        torch.set_num_threads(threads)
    board = pd.read_csv(out / "leaderboard.csv")
    for method in ("singer", "singer-no-both"):
        row = _row(board, method)
        assert row["n_clips"] == 1 and 0 < row["SSIM"] < 1 and np.isfinite(row["PSNR"])
    videos = sorted((out / "videos").rglob("*.mp4")) if (out / "videos").exists() else sorted(out.rglob("*.mp4"))
    assert len(videos) == 2
    info = media.probe(videos[0])
    assert info.n_frames == 50 and info.fps == pytest.approx(25.0) and info.has_audio


def test_metric_fingerprint_ignores_device_and_progress_only() -> None:
    from benchmark.metrics.psnr import PSNR

    m = PSNR()
    base = runner._metric_fingerprint("psnr", m, {"data_range": 255})
    assert runner._metric_fingerprint("psnr", m, {"data_range": 255, "device": "cuda", "progress": False}) == base
    assert runner._metric_fingerprint("psnr", m, {"data_range": 1.0}) != base
