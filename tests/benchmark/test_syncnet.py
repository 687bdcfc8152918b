"""SyncNet port: state-dict layout equals syncnet_python's ``S``; weights load (and refuse) correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.extractors.syncnet import SYNCNET_WEIGHTS, SyncNet, load_syncnet
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file


@pytest.fixture(autouse=True)
def _no_weight_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own weights must not leak into these tests."""
    monkeypatch.delenv("SHV_SYNCNET_WEIGHTS", raising=False)
    monkeypatch.delenv("SHV_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="module")
def random_model() -> SyncNet:
    torch.manual_seed(1234)
    m = SyncNet()
    # non-trivial BatchNorm statistics, so that a load that skipped buffers would be noticed
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(7)
    return m.eval()


def test_state_dict_names_and_shapes_equal_reference(checkpoint_keys: Path) -> None:
    ref = json.loads((checkpoint_keys / "syncnet_S.json").read_text())
    ours = {k: list(v.shape) for k, v in SyncNet().state_dict().items()}
    assert len(ref) == 102
    assert set(ours) == set(ref), (sorted(set(ours) ^ set(ref)))[:5]
    for key, shape in ref.items():
        assert ours[key] == shape, key
    assert list(ours) == list(ref)  # same order as the reference module


def test_forward_shapes() -> None:
    m = SyncNet().eval()
    with torch.no_grad():
        lip = m.netcnnlip(torch.rand(2, 3, 5, 224, 224) * 255)
        aud = m.netcnnaud(torch.randn(2, 1, 13, 20))
        assert lip.shape == (2, 512, 1, 1, 1)
        assert aud.shape == (2, 512, 1, 1)
        v, a = m(torch.rand(2, 3, 5, 224, 224) * 255, torch.randn(2, 1, 13, 20))
    assert v.shape == a.shape == (2, 1024)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()


def _outputs(m: SyncNet) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x_v = torch.rand(2, 3, 5, 224, 224, generator=g) * 255
    x_a = torch.randn(2, 1, 13, 20, generator=g)
    with torch.no_grad():
        return m.forward_lip(x_v), m.forward_aud(x_a)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_weights_round_trip(tmp_path: Path, random_model: SyncNet, legacy: bool) -> None:
    path = tmp_path / "syncnet_v2.model"
    # the published file is a plain state dict written by torch.save (old, non-zip format)
    torch.save(random_model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    loaded, found, digest = load_syncnet(path)
    assert found == path and digest == sha256_file(path)
    assert not loaded.training
    ref_sd, got_sd = random_model.state_dict(), loaded.state_dict()
    for k, v in ref_sd.items():
        assert torch.equal(got_sd[k], v), k
    for a, b in zip(_outputs(random_model), _outputs(loaded), strict=True):
        assert torch.equal(a, b)
    # and the fresh model differs, so the comparison above is meaningful
    assert not torch.equal(_outputs(SyncNet().eval())[0], _outputs(random_model)[0])


def test_weights_found_through_env_and_weights_dir(
    tmp_path: Path, random_model: SyncNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "syncnet_v2.model"
    torch.save(random_model.state_dict(), path)
    monkeypatch.setenv("SHV_WEIGHTS_DIR", str(tmp_path))
    assert load_syncnet()[1] == path
    other = tmp_path / "elsewhere.pt"
    torch.save(random_model.state_dict(), other)
    monkeypatch.setenv("SHV_SYNCNET_WEIGHTS", str(other))
    assert load_syncnet()[1] == other  # the specific variable wins over the directory


def test_old_checkpoints_and_prefixed_keys_load(tmp_path: Path, random_model: SyncNet) -> None:
    # pre-0.4 files have no num_batches_tracked; SyncNetInstance.state_dict() prefixes "__S__."
    sd = {f"__S__.{k}": v for k, v in random_model.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "syncnet_v2.model"
    torch.save(sd, path)
    loaded = load_syncnet(path)[0]
    for a, b in zip(_outputs(random_model), _outputs(loaded), strict=True):
        assert torch.equal(a, b)


def test_wrong_shapes_and_missing_keys_are_refused(tmp_path: Path, random_model: SyncNet) -> None:
    sd = dict(random_model.state_dict())
    sd["netfcaud.3.weight"] = torch.zeros(512, 512)  # a 512-d head instead of 1024
    path = tmp_path / "bad.model"
    torch.save(sd, path)
    with pytest.raises(MissingWeightsError, match="netfcaud.3.weight"):
        load_syncnet(path)
    sd = dict(random_model.state_dict())
    del sd["netcnnlip.0.weight"]
    torch.save(sd, path)
    with pytest.raises(MissingWeightsError, match="netcnnlip.0.weight"):
        load_syncnet(path)


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):  # would create the marker file if unpickled without weights_only
            return (Path.touch, (marker,))

    path = tmp_path / "syncnet_v2.model"
    torch.save({"netcnnaud.0.weight": Payload()}, path)
    with pytest.raises(MissingWeightsError, match="cannot read SyncNet weights"):
        load_syncnet(path)
    assert not marker.exists()


def test_missing_weights_message_names_file_and_source(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        load_syncnet()
    msg = str(info.value)
    assert "syncnet_v2.model" in msg
    assert "download_model.sh" in msg and "joonson/syncnet_python" in msg
    assert "www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model" in msg
    assert "SHV_SYNCNET_WEIGHTS" in msg and "SHV_WEIGHTS_DIR" in msg
    # an explicit path that does not exist is an error too, and it is named
    with pytest.raises(MissingWeightsError, match="nothere.model"):
        load_syncnet(tmp_path / "nothere.model")
    assert SYNCNET_WEIGHTS.filename == "syncnet_v2.model"
