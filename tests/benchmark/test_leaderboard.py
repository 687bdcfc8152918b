"""Leaderboard rows, replacement, paper rows and renderings (no video needed)."""

from __future__ import annotations

import csv
import io

import numpy as np
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


def test_method_columns_follow_the_metadata_and_round_trip(tmp_path):
    # identity_backend and dtype come last: every older column keeps its position
    assert lb.COLUMNS[-len(lb.META) - 2:] == lb.META + ["identity_backend", "dtype"]
    assert lb.COLUMNS.index("ci") == len(lb.COLUMNS) - 3
    singer = _row("singer", method_info={"identity_backend": "insightface", "dtype": "bfloat16", "seed": 0})
    static = _row("static")
    assert (singer["identity_backend"], singer["dtype"]) == ("insightface", "bfloat16")
    assert static["identity_backend"] is None and static["dtype"] is None and "seed" not in singer
    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), [singer, static])
    (tmp_path / "leaderboard.csv").write_text(board[lb.COLUMNS].to_csv(index=False))
    back = lb.read_leaderboard(tmp_path).set_index("method")
    assert back.loc["singer", "identity_backend"] == "insightface" and back.loc["singer", "dtype"] == "bfloat16"
    assert pd.isna(back.loc["static", "identity_backend"]) and pd.isna(back.loc["static", "dtype"])


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


# ------------------------------------------------------------------- protocols, intervals, paper tables


def _measured(method: str, protocol: str, ssim: float, psnr: float = 20.0) -> dict:
    proto = get_protocol(protocol)
    results = {
        "ssim": MetricResult("ssim", ssim, True, 3),
        "psnr": MetricResult("psnr", psnr, True, 3, n_failed=1, extras={"failed_clips": ["c2"]}),
        "psnr_uint8_wrap": MetricResult("psnr_uint8_wrap", psnr + 10.0, True, 3),
    }
    return lb.make_row(method=method, dataset="sample", protocol=proto, results=results,
                       requested=["ssim", "psnr"], missing={}, n_clips=3, failures={}, extractor_hashes={},
                       driving_audio="mix", manifest="m", date="d",
                       intervals={"ssim": (ssim - 0.1, ssim + 0.05), "psnr_uint8_wrap": (psnr + 9, psnr + 11)},
                       ci="95% percentile bootstrap over the 3 test clips, 1000 resamples, seed 0")


def test_row_intervals_wrap_column_and_failed_clip_counts() -> None:
    v1, paper = _measured("static", "shv-v1", 0.5), _measured("static", "singer-paper", 0.5)
    assert (v1["SSIM_lo"], v1["SSIM_hi"]) == (0.4, 0.55) and v1["PSNR_lo"] is None  # no interval given
    assert v1["PSNR-uint8-wrap"] is None and "PSNR-uint8-wrap" not in (v1["missing"] or "")
    assert paper["PSNR-uint8-wrap"] == 30.0 and (paper["PSNR-uint8-wrap_lo"], paper["PSNR-uint8-wrap_hi"]) == (29, 31)
    assert paper["PSNR"] == 20.0  # the variant never replaces PSNR
    assert "PSNR: 1 clip(s) without a finite value, left out (c2)" in v1["notes"]
    assert "PSNR on 2 of 3 clips" in v1["notes"]
    assert v1["ci"].startswith("95% percentile bootstrap")


def _table_blocks(md: str) -> list[list[str]]:
    blocks, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    return blocks + ([cur] if cur else [])


def test_protocols_never_share_a_table_and_paper_gt_sits_beside_yours(tmp_path) -> None:
    rows = [_measured("static", "shv-v1", 0.5), _measured("ground-truth", "shv-v1", 1.0),
            _measured("static", "singer-paper", 0.6), _measured("ground-truth", "singer-paper", 1.0)]
    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), rows + lb.load_paper_rows())
    assert len(board) == 4 + 22  # the CSV holds both protocols, marked
    md = lb.to_markdown(board)
    measured_part, paper_part = md.split("Reported in the SINGER paper")
    blocks = _table_blocks(measured_part)
    assert len(blocks) == 2
    for block in blocks:
        protos = {[c.strip() for c in line.strip("|").split("|")][2] for line in block[2:]}
        assert len(protos) == 1
    assert "PSNR-uint8-wrap↑" not in blocks[0][0] and "PSNR-uint8-wrap↑" in blocks[1][0]
    assert "0.5000 [0.4000, 0.5500]" in measured_part
    gt_block = _table_blocks(paper_part.split("Ground truth: your test set")[1])[0]
    labels = [tuple(c.strip() for c in line.strip("|").split("|")[:4]) for line in gt_block[2:]]
    assert labels == [("ground-truth", "measured", "sample", "singer-paper"), ("GT", "paper", "SHV", "Table 1"),
                      ("GT", "paper", "SingingHead", "Table 5")]
    assert "| GT | paper | SHV | Table 1 |  |  |  | 0.5338 | 0.0000 | 0.0000 | 8.5541 | 4.5286 | 21.754 | 0.2484 |" \
        in paper_part
    assert len(_table_blocks(paper_part)) == 4  # Tables 1, 3, 5 and the ground-truth comparison
    html = lb.to_html(board, tmp_path)
    assert html.count("<table class=board>") == 2 + 4 + 1  # + the provenance table
    assert "<small>[0.4000, 0.5500]</small>" in html
    lb.write_all(tmp_path, board)
    recs = list(csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text())))
    assert {r["protocol"] for r in recs if r["source"] == "measured"} == {"shv-v1", "singer-paper"}
    assert {r["table"] for r in recs if r["source"] == "paper"} == {"Table 1", "Table 3", "Table 5"}
    assert all(r["table"] == "" for r in recs if r["source"] == "measured")


def test_png_draws_the_intervals_as_error_bars() -> None:
    from matplotlib.figure import Figure

    rows = [_measured("static", "singer-paper", 0.6), _measured("ground-truth", "singer-paper", 0.9)]
    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), rows)
    fig = Figure()
    lb._panel(fig, lb.table_groups(board)[0][2], "t")
    ssim_ax = fig.axes[0]
    bars = [c for c in ssim_ax.containers if getattr(c, "errorbar", None) is not None]
    spans = sorted(tuple(np.round(seg[:, 1], 6)) for c in bars for seg in c.errorbar.lines[2][0].get_segments())
    assert spans == [(0.5, 0.65), (0.8, 0.95)]
    psnr_ax = fig.axes[1]  # no interval given for PSNR: no error bar
    assert not [c for c in psnr_ax.containers if getattr(c, "errorbar", None) is not None]
