"""Leaderboard rows, replacement, paper rows and renderings (no video needed)."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from benchmark import leaderboard as lb
from benchmark.metrics.base import MetricResult
from benchmark.protocol import get_protocol


def _row(method: str, ssim: float | None = 0.5, **kw) -> dict:
    results = {
        "ssim": MetricResult("ssim", ssim, True, 3 if ssim is not None else 0),
        "psnr": MetricResult("psnr", 20.0, True, 2),
        "fvd": MetricResult("fvd", None, False, 3, missing_reason="FVD needs at least 2 windows"),
        "lse": MetricResult("lse", None, False, 0, missing_reason="weights missing: syncnet_v2.model"),
    }
    args = dict(method=method, dataset="sample", protocol=get_protocol("shv-v1"), results=results,
                requested=["ssim", "psnr", "fvd", "lse"], missing={"lse": "weights missing: syncnet_v2.model"},
                n_clips=3, failures={"c3": {"psnr": "boom"}}, extractor_hashes={"fvd.i3d": "ab"},
                driving_audio="mix", manifest="m/test.parquet", date="2025-01-01T00:00:00Z")
    args.update(kw)
    return lb.make_row(**args)


def test_make_row_cells_and_reasons():
    row = _row("static")
    assert list(row) == lb.COLUMNS
    assert row["SSIM"] == 0.5 and row["PSNR"] == 20.0
    for col in ("FVD", "LSE-D", "LSE-C", "LMD", "Diversity", "BAS", "CPBD"):
        assert row[col] is None
    assert "LSE-D, LSE-C: weights missing: syncnet_v2.model" in row["missing"]
    assert "FVD: FVD needs at least 2 windows" in row["missing"]
    assert "CPBD, LMD, Diversity, BAS, LMD-face: not requested" in row["missing"]
    assert "PSNR on 2 of 3 clips" in row["notes"]
    assert row["n_failed"] == 1 and row["n_scored"] == 2 and row["protocol_fingerprint"]
    assert _row("x", ssim=None)["missing"].startswith("SSIM: failed on every clip")


def test_upsert_replaces_in_place_and_keeps_others():
    board = pd.DataFrame(columns=lb.COLUMNS)
    board = lb.upsert(board, [_row("a"), _row("b"), _row("c")])
    board = lb.upsert(board, [_row("b", ssim=0.9)])
    assert list(board["method"]) == ["a", "b", "c"]
    assert list(board["SSIM"]) == [0.5, 0.9, 0.5]
    board = lb.upsert(board, [_row("b", ssim=0.7, dataset="other")])  # another dataset: a new row
    assert list(board["method"]) == ["a", "b", "c", "b"]


def test_paper_rows_stay_separate(tmp_path):
    shipped = lb.load_paper_rows()
    header = next(line for line in lb.PAPER_ROWS.read_text().splitlines() if not line.startswith("#"))
    assert header.split(",")[3:12] == [c.title for c in lb.TABLE1]
    assert all(r["source"] == "paper" for r in shipped)
    # a paper file with one row (test input, not the paper's numbers)
    paper = tmp_path / "paper.csv"
    paper.write_text("# comment\n" + header + "\ntest-row,SHV,Table 1,0.7,25.1,,,,,,,,\n")
    rows = lb.load_paper_rows(paper)
    assert len(rows) == 1 and rows[0]["source"] == "paper" and rows[0]["SSIM"] == 0.7 and rows[0]["FVD"] is None
    assert rows[0]["notes"] == lb.PAPER_NOTE and rows[0]["protocol"] == "SINGER paper Table 1"
    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), [_row("static")] + rows)
    lb.write_all(tmp_path, board)
    text = (tmp_path / "leaderboard.csv").read_text()
    recs = list(csv.DictReader(io.StringIO(text)))
    assert [(r["method"], r["source"]) for r in recs] == [("static", "measured"), ("test-row", "paper")]
    md = (tmp_path / "leaderboard.md").read_text()
    measured_part, paper_part = md.split("Reported in the SINGER paper")
    assert "test-row" not in measured_part and "test-row" in paper_part and "not reproduced here" in paper_part
    html = (tmp_path / "report.html").read_text()
    assert "Reported in the SINGER paper" in html


def test_markdown_and_png(tmp_path):
    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), [_row("static"), _row("ground-truth", ssim=1.0)])
    md = lb.to_markdown(board)
    assert "| SSIM↑ | PSNR↑ | CPBD↑ | FVD↓ | LMD↓ | LSE-D↓ | LSE-C↑ | Diversity↑ | BAS↑ |" in md
    line = next(x for x in md.splitlines() if x.startswith("| static"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "0.5000" and cells[7] == ""  # FVD empty, not 0
    lb.write_png(board, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("value,col,expected", [(None, lb.TABLE1[0], ""), (float("nan"), lb.TABLE1[0], ""),
                                                (100.0, lb.TABLE1[1], "100.00")])
def test_cell_format(value, col, expected):
    assert lb._cell(value, col) == expected
