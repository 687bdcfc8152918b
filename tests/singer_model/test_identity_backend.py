"""Identity backend: recorded in checkpoints, announced once when it is the fallback, enforced at inference,
insightface providers following the device."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import yaml

import singer_model.data as data_mod
from shv_toolkit.core.errors import MissingWeightsError
from singer_model.data import IdentityEmbedder, insightface_providers
from singer_model.infer import load_pipeline
from singer_model.tiny import make_tiny_checkpoint
from singer_model.train import Trainer
from tests.singer_model.test_train import _fresh, manifest, prepared, tiny_cfg  # noqa: F401  (fixtures)


def test_providers_follow_the_device():
    assert insightface_providers("cpu") == (["CPUExecutionProvider"], -1)
    assert insightface_providers("cuda") == (["CUDAExecutionProvider", "CPUExecutionProvider"], 0)
    assert insightface_providers("cuda:1") == (["CUDAExecutionProvider", "CPUExecutionProvider"], 1)


def test_fallback_is_announced_once(monkeypatch, caplog):
    monkeypatch.setattr(data_mod, "_FALLBACK_WARNED", False)
    with caplog.at_level(logging.WARNING, logger="singer_model.data"):
        a = IdentityEmbedder(8, backend="fallback")
        b = IdentityEmbedder(8, backend="auto")  # no face_analysis models: the fallback too
    assert a.backend == b.backend == "fallback"
    assert sum("fallback" in r.getMessage() for r in caplog.records) == 1


def test_checkpoint_records_the_backend_used_not_auto(tiny_cfg, manifest, prepared, tmp_path):  # noqa: F811
    cfg = replace(tiny_cfg, data=replace(tiny_cfg.data, identity_backend="auto"))
    tr = Trainer(cfg, manifest, _fresh(prepared, tmp_path), progress=False)
    assert tr.identity_backend == "fallback"
    tr.run(max_steps=1)
    conf = yaml.safe_load((tmp_path / "checkpoints" / "step-00000001" / "config.yaml").read_text())
    assert conf["data"]["identity_backend"] == "fallback"
    assert load_pipeline(tmp_path / "checkpoints" / "step-00000001").identity_backend == "fallback"


def test_an_insightface_checkpoint_is_refused_without_insightface(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "insightface", None)  # not importable, whatever is installed
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "face_analysis" / "models").mkdir(parents=True)
    conf = yaml.safe_load((ckpt / "config.yaml").read_text())
    conf["data"]["identity_backend"] = "insightface"
    conf["weights"]["face_analysis"] = "face_analysis"
    (ckpt / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(MissingWeightsError, match="made with identity_backend 'insightface'"):
        load_pipeline(ckpt)
