"""benchmark/paper_rows.csv holds the SINGER paper's Tables 1, 3 and 5 exactly as shared/paper has them."""

from __future__ import annotations

import csv
import io

import pytest

from benchmark import leaderboard as lb
from tests.conftest import SHARED

METRIC_COLUMNS = ["SSIM", "PSNR", "CPBD", "FVD", "LMD", "LSE-D", "LSE-C", "Diversity", "BAS"]


def _rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


@pytest.fixture(scope="module")
def source() -> list[dict[str, str]]:
    path = SHARED / "paper" / "singer_tables.csv"
    if not path.is_file():
        # not a skip: CI always has ../shared (see tests/conftest.py)
        raise RuntimeError(f"the paper's tables are not at {path}; set SHV_SHARED_DIR")
    return _rows(path.read_text())


def test_every_cell_equals_the_shared_tables(source) -> None:
    shipped = _rows(lb.PAPER_ROWS.read_text())
    assert len(shipped) == len(source) == 22
    for mine, theirs in zip(shipped, source, strict=True):
        for key in ["method", "dataset", "table", *METRIC_COLUMNS]:
            assert mine[key] == theirs[key], (theirs["method"], theirs["table"], key)  # the printed string
        assert mine["note"] == ""
    assert {r["table"] for r in shipped} == {"1", "3", "5"}


def test_loaded_rows_are_the_printed_numbers(source) -> None:
    rows = lb.load_paper_rows()
    assert len(rows) == len(source)
    for row, theirs in zip(rows, source, strict=True):
        assert row["source"] == "paper" and row["table"] == f"Table {theirs['table']}"
        assert row["dataset"] == theirs["dataset"] and row["method"] == theirs["method"]
        for key in METRIC_COLUMNS:
            expected = float(theirs[key]) if theirs[key] else None
            assert row[key] == expected, (theirs["method"], key)
            # the renderings show the cell exactly as printed ("0.2400", "0.0000", "" for an empty cell)
            col = next(c for c in lb.TABLE1 if c.title == key)
            assert lb._cell_ci(row, col) == theirs[key]
    # the ground-truth rows the comparison table uses
    gt = {(r["dataset"], r["table"]): r for r in rows if r["method"] == "GT"}
    assert gt[("SHV", "Table 1")]["Diversity"] == 21.754 and gt[("SHV", "Table 1")]["BAS"] == 0.2484
    assert gt[("SingingHead", "Table 5")]["LSE-C"] == 1.4830


def test_same_method_in_two_tables_stays_two_rows() -> None:
    import pandas as pd

    board = lb.upsert(pd.DataFrame(columns=lb.COLUMNS), lb.load_paper_rows())
    singer_shv = board[(board["method"] == "SINGER") & (board["dataset"] == "SHV")]
    assert sorted(singer_shv["table"]) == ["Table 1", "Table 3"]
    assert len(board) == 22
