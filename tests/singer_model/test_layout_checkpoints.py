"""Full-size published layouts (meta device) and the net.pth / component loaders on tiny saved models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shv_toolkit.core.errors import MissingWeightsError
from singer_model.checkpoints import (
    CheckpointMismatchError,
    WeightPaths,
    load_motion_module,
    load_net_checkpoint,
    load_pretrained,
    load_sd15_unet,
    save_net_checkpoint,
    save_state_dict,
    to_published,
)
from singer_model.config import SingerConfig
from singer_model.layout import dump_layout, write_layout
from singer_model.model import SingerNet


@pytest.fixture(scope="module")
def layouts() -> dict[str, dict[str, list[int]]]:
    return {kind: dump_layout(kind) for kind in ("hallo", "singer")}


@pytest.mark.parametrize("kind", ["hallo", "singer"])
def test_full_size_layout_equals_published(kind: str, layouts: dict, checkpoint_keys: Path) -> None:
    ref = json.loads((checkpoint_keys / f"{kind}_net_checkpoint.json").read_text())
    ours = layouts[kind]
    assert ours == ref  # every key and shape
    assert list(ours) == list(ref)  # and the state-dict order
    for comp in ("reference_unet", "denoising_unet", "face_locator", "imageproj", "audioproj"):
        comp_ref = json.loads((checkpoint_keys / f"{kind}_{comp}.json").read_text())
        prefix = comp + "."
        assert {k[len(prefix):]: v for k, v in ours.items() if k.startswith(prefix)} == comp_ref, comp


def test_full_size_summary_counts(layouts: dict, checkpoint_keys: Path) -> None:
    for kind in ("hallo", "singer"):
        summary = json.loads((checkpoint_keys / f"{kind}_summary.json").read_text())
        ours = layouts[kind]
        for comp, n in summary["net_top_level_prefixes"].items():
            assert sum(k.startswith(comp + ".") for k in ours) == n
    msm = json.loads((checkpoint_keys / "singer_audioembed_msm_bs1.json").read_text())
    assert {k[len("audioembed."):]: v for k, v in layouts["singer"].items() if k.startswith("audioembed.")} == msm
    sd15 = json.loads((checkpoint_keys / "sd15_unet2d_diffusers.json").read_text())
    den = {k[len("denoising_unet."):]: v for k, v in layouts["hallo"].items() if k.startswith("denoising_unet.")}
    assert all(den[k] == v for k, v in sd15.items())


def test_write_layout(tmp_path: Path) -> None:
    tiny_ok = write_layout("hallo", tmp_path / "l.json", component="imageproj")
    assert json.loads(tiny_ok.read_text()) == {"proj.weight": [3072, 512], "proj.bias": [3072],
                                              "norm.weight": [768], "norm.bias": [768]}


@pytest.fixture(scope="module")
def tiny_net() -> SingerNet:
    torch.manual_seed(0)
    net = SingerNet(SingerConfig.tiny())
    with torch.no_grad():  # non-trivial values everywhere (zero-inits included)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_round_trip_published_format(tiny_net: SingerNet, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"net{suffix}"
    save_net_checkpoint(tiny_net, path)
    if suffix == ".pth":
        raw = torch.load(path, weights_only=True)
        assert "audioembed.dct_layer.weight" in raw and raw["audioembed.dct_layer.weight"].ndim == 5
        assert "denoising_unet.hidden_spectral_weighting.weight" in raw
    torch.manual_seed(1)
    fresh = SingerNet(SingerConfig.tiny())
    assert load_net_checkpoint(fresh, path) == "singer"
    a, b = tiny_net.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_release_batch6_buffer_converts_exactly(tiny_net: SingerNet, tmp_path: Path) -> None:
    published = to_published(tiny_net.state_dict(), "singer")
    buf = torch.randn(6, 4, 14, 8, 8)  # the release's training-time buffer: batch 6
    published["audioembed.dct_layer.weight"] = buf
    sfm_w = torch.randn(4, 1, 32, 4, 4)
    published["denoising_unet.hidden_spectral_weighting.weight"] = sfm_w
    save_state_dict(published, tmp_path / "singer_bs6.pth")
    net = SingerNet(SingerConfig.tiny())
    load_net_checkpoint(net, tmp_path / "singer_bs6.pth", "singer")
    assert torch.allclose(net.msm.w, buf.sum(dim=(0, 2)))
    assert torch.allclose(net.denoising_unet.sfm.band_weight, sfm_w.sum(dim=(1, 3, 4)))


def test_hallo_and_ablation_loading(tiny_net: SingerNet, tmp_path: Path) -> None:
    hallo = SingerNet(SingerConfig.tiny(use_msm=False, use_sfm=False))
    save_net_checkpoint(hallo, tmp_path / "hallo.pth")
    raw = torch.load(tmp_path / "hallo.pth", weights_only=True)
    assert not any(k.startswith("audioembed.") or "hidden_spectral" in k for k in raw)
    # SINGER file into the Hallo model needs the explicit flag
    save_net_checkpoint(tiny_net, tmp_path / "singer.pth")
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        load_net_checkpoint(hallo, tmp_path / "singer.pth")
    load_net_checkpoint(hallo, tmp_path / "singer.pth", allow_missing_singer_modules=True)
    assert torch.equal(hallo.state_dict()["audioproj.proj1.weight"], tiny_net.state_dict()["audioproj.proj1.weight"])
    paths = WeightPaths(hallo_net=str(tmp_path / "hallo.pth"))
    assert load_pretrained(SingerNet(SingerConfig.tiny()), paths) == "hallo"


def test_mismatch_and_missing_errors(tiny_net: SingerNet, tmp_path: Path) -> None:
    sd = to_published(tiny_net.state_dict(), "singer")
    sd.pop("imageproj.norm.bias")
    sd["audioproj.proj2.weight"] = torch.zeros(3, 3)
    sd["extra.thing"] = torch.zeros(1)
    save_state_dict(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_net_checkpoint(SingerNet(SingerConfig.tiny()), tmp_path / "bad.pth")
    msg = str(err.value)
    assert "1 missing: imageproj.norm.bias" in msg and "1 unexpected: extra.thing" in msg
    assert "audioproj.proj2.weight expected (16, 16) found (3, 3)" in msg
    with pytest.raises(MissingWeightsError, match="net.pth.*not found"):
        load_net_checkpoint(tiny_net, tmp_path / "nope" / "net.pth")
    with pytest.raises(MissingWeightsError, match="mm_sd_v15_v2"):
        load_motion_module(tiny_net, tmp_path / "mm_sd_v15_v2.ckpt")
    with pytest.raises(MissingWeightsError, match="no weights configured"):
        load_pretrained(tiny_net, WeightPaths())


def test_sd15_unet_and_motion_module_loaders(tmp_path: Path) -> None:
    torch.manual_seed(4)
    src = SingerNet(SingerConfig.tiny(use_msm=False, use_sfm=False))
    # an SD-1.5-style diffusers folder: the full 2D UNet incl. its output head
    from singer_model.backbone.reference_unet import build_sd15_unet2d

    unet2d = build_sd15_unet2d(src.cfg.unet)
    save_state_dict(unet2d.state_dict(), tmp_path / "sd15" / "unet" / "diffusion_pytorch_model.safetensors")
    mm = {k: torch.randn_like(v) for k, v in src.denoising_unet.state_dict().items() if ".motion_modules." in k}
    save_state_dict(mm, tmp_path / "mm_sd_v15_v2.ckpt")
    (tmp_path / "weights.json").write_text(json.dumps({"sd15_unet": "sd15", "motion_module": "mm_sd_v15_v2.ckpt"}))
    net = SingerNet(SingerConfig.tiny(use_msm=False, use_sfm=False))
    assert load_pretrained(net, WeightPaths.from_file(tmp_path / "weights.json")) == "base"
    ref_sd, den_sd, u2 = net.reference_unet.state_dict(), net.denoising_unet.state_dict(), unet2d.state_dict()
    assert all(torch.equal(ref_sd[k], u2[k]) for k in ref_sd)
    assert all(torch.equal(den_sd[k], u2[k]) for k in u2)  # 2D keys incl. conv_out
    assert all(torch.equal(den_sd[k], mm[k]) for k in mm)
    load_sd15_unet(net, tmp_path / "sd15")  # idempotent through the folder path too
