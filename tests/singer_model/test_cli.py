"""shv-train's non-training entry points: the checkpoint layout dump and the compute plan."""

from __future__ import annotations

import json

import pytest

from singer_model.cli import train_main


@pytest.mark.parametrize("kind", ["hallo", "singer"])
def test_dump_checkpoint_layout_equals_published_reference(kind, tmp_path, checkpoint_keys):
    out = tmp_path / f"{kind}.json"
    assert train_main(["--dump-checkpoint-layout", kind, "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    ref = json.loads((checkpoint_keys / f"{kind}_net_checkpoint.json").read_text())
    assert list(got) == list(ref)  # same keys in the same (state_dict) order
    assert got == ref  # and the same shapes


def test_plan_flag_prints_json(capsys):
    assert train_main(["--plan", "--model", "tiny", "--json", "--checkpointing", "off"]) in (0, None)
    data = json.loads(capsys.readouterr().out)
    text = json.dumps(data)
    assert "trainable" in text and "flop" in text.lower()
