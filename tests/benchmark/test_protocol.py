"""Protocols: singer-paper's conventions, their evidence lines, and shv-v1 left as it was."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.protocol import PROTOCOLS, SINGER_PAPER_EVIDENCE, Protocol, get_protocol

# shv-v1's fingerprint before singer-paper's settings were added (commit 0bd9890): stored results keep it
SHV_V1_FINGERPRINT = "59de291d8554"


def test_shv_v1_fingerprint_unchanged_by_the_new_settings() -> None:
    assert get_protocol("shv-v1").fingerprint() == SHV_V1_FINGERPRINT
    # ...but a changed new setting does change it
    changed = dataclasses.replace(get_protocol("shv-v1"), lmd_reduction="sum")
    assert changed.fingerprint() != SHV_V1_FINGERPRINT


def test_singer_paper_conventions() -> None:
    p = get_protocol("singer-paper")
    assert p.eval_size == (512, 512)
    assert p.lmd_reduction == "sum" and p.diversity_normaliser == "none"
    assert p.fvd_window == 16 and p.fvd_stride == 16
    assert p.bas_tolerance_ms == 50.0 and p.bas_tolerance == pytest.approx(50.0 * 25.0 / 1000.0)
    assert p.psnr_uint8_wrap is True
    assert p.fingerprint() != get_protocol("shv-v1").fingerprint()
    # shv-v1 keeps its frame tolerance
    assert get_protocol("shv-v1").bas_tolerance == 3.0
    # Bailando's tolerance: 3 frames at 60 Hz is 50 ms, whatever the grid
    assert dataclasses.replace(p, fps=60.0).bas_tolerance == pytest.approx(3.0)


def test_every_singer_paper_choice_has_one_line_of_evidence() -> None:
    base, paper = get_protocol("shv-v1").to_dict(), get_protocol("singer-paper").to_dict()
    differing = {k for k in paper if k != "name" and paper[k] != base[k]}
    assert differing == set(SINGER_PAPER_EVIDENCE)
    for key, line in SINGER_PAPER_EVIDENCE.items():
        assert "\n" not in line and len(line) > 40, key


def test_protocol_registry() -> None:
    assert set(PROTOCOLS) >= {"shv-v1", "singer-paper"}
    assert all(isinstance(p, Protocol) and p.name == k for k, p in PROTOCOLS.items())
    with pytest.raises(KeyError, match="unknown protocol"):
        get_protocol("nope")
