"""The denoising UNet carries frames ``[(B F), C, h, w]`` between its blocks: its layout copies are the
inevitable conversions only, counted by ``perf/singer_layout_copies.py`` on the meta device."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from singer_model.backbone.audio_attention import AudioTransformer3D
from singer_model.backbone.blocks import SpatialTransformer3D
from singer_model.backbone.motion_module import MotionModule
from singer_model.config import SFMConfig, SingerConfig
from singer_model.model import SingerNet
from singer_model.sfm import SelfAdaptiveFilterModule

from .conftest import perf_script

# Layout copies of the same forward (tiny config, 4 frames, 16x16 latents, batch 2, fp32, meta device) before
# the UNet carried frames, at commit c4fcdf7 (each block converted [B, C, F, h, w] to frames and back, the
# motion module to [(B h w), F, C] and back per attention):
#   python perf/singer_layout_copies.py --model tiny --size 128 --frames 4 --dtype fp32 [--motion-frames 0]
# run against that commit's singer_model: 159 clones, 10129408 bytes (2 motion frames); 142, 6805504 (none).
# Now: 36 clones, 2200576 bytes; 36, 1879040.
OLD = {2: (159, 10_129_408), 0: (142, 6_805_504)}
FRAMES, SIZE, BATCH = 4, 128, 2


@pytest.fixture(scope="module")
def perf():
    yield from perf_script("singer_layout_copies")


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _inevitable(unet: nn.Module, record: list[tuple[str, int]]) -> list[Any]:
    """Hooks recording the one conversion each module needs: (module kind, bytes copied)."""

    def spatial(_m: nn.Module, a: tuple) -> None:
        record.append(("spatial", _nbytes(a[0])))  # frames -> tokens [(B F), h*w, C]

    def audio(m: nn.Module, a: tuple) -> None:  # tokens of the proj_in width
        record.append(("audio", _nbytes(a[0]) * m.proj_in.out_channels // m.proj_in.in_channels))

    def motion(_m: nn.Module, a: tuple) -> None:  # [(B h w), F + M, C], motion frames prepended
        hidden, frames = a[0], a[1]
        m = a[2].shape[1] if len(a) > 2 and a[2] is not None else 0
        record.append(("motion", _nbytes(hidden) * (frames + m) // frames))

    hooks = {SpatialTransformer3D: spatial, AudioTransformer3D: audio, MotionModule: motion}
    return [mod.register_forward_pre_hook(hooks[type(mod)]) for mod in unet.modules() if type(mod) in hooks]


@pytest.mark.parametrize("motion_frames", [2, 0])
@pytest.mark.parametrize("kind", ["singer", "hallo"])
def test_unet_layout_copies_are_the_inevitable_conversions(perf, kind: str, motion_frames: int) -> None:
    base = SingerConfig.tiny()
    cfg = base if kind == "singer" else SingerConfig.tiny(use_msm=False, use_sfm=False)
    with torch.device("meta"):
        net = SingerNet(cfg)
    net.eval()
    meta = torch.device("meta")
    args = perf.unet_inputs(net, FRAMES, SIZE, BATCH, motion_frames, torch.float32, meta)
    unet = net.denoising_unet
    record: list[tuple[str, int]] = []
    handles = _inevitable(unet, record)
    try:
        def forward() -> None:
            with torch.no_grad(), perf.attention_for(meta):
                unet(**args)

        stats = perf.count_copies(forward)
    finally:
        for h in handles:
            h.remove()
    kinds = [k for k, _ in record]
    assert kinds.count("spatial") == kinds.count("audio") == 10 and kinds.count("motion") == 13
    # besides one conversion per module: the entry [B, 4, F, h, w] -> frames, and the time embedding and the
    # identity tokens repeated per frame once per forward (the exit is a view)
    u, bf = cfg.unet, BATCH * FRAMES
    temb = bf * u.block_out_channels[0] * 4 * 4
    context = bf * cfg.image_tokens * u.cross_attention_dim * 4
    bound_ops = len(record) + 3
    bound_bytes = sum(b for _, b in record) + _nbytes(args["sample"]) + temb + context
    assert stats.total_ops <= bound_ops and stats.total_bytes <= bound_bytes, (stats, bound_ops, bound_bytes)
    old_ops, old_bytes = OLD[motion_frames]
    assert stats.total_ops < old_ops and stats.total_bytes < old_bytes
    assert set(stats.ops) == {"clone"}


def test_blocks_hand_on_contiguous_frames() -> None:
    """Every block of the UNet returns contiguous frames [(B F), C, h, w]; the output keeps its public shape."""
    torch.manual_seed(0)
    net = SingerNet(SingerConfig.tiny()).eval()
    cfg = net.cfg
    b, f, lat, m = 1, 3, 16, cfg.n_motion_frames
    kinds = (ResnetBlock2D, Downsample2D, Upsample2D, SpatialTransformer3D, AudioTransformer3D, MotionModule,
             SelfAdaptiveFilterModule)
    seen: list[tuple[str, tuple[int, ...], bool]] = []
    handles = []
    for name, mod in net.denoising_unet.named_modules():
        if isinstance(mod, kinds):
            def hook(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
                out = out[0] if isinstance(out, tuple) else out
                seen.append((name, tuple(out.shape), out.is_contiguous()))
            handles.append(mod.register_forward_hook(hook))
    g = torch.Generator().manual_seed(1)
    try:
        with torch.no_grad():
            out = net(
                noisy_latents=torch.randn(b, 4, f, lat, lat, generator=g), timesteps=torch.tensor([10]),
                ref_latents=torch.randn(b * (1 + m), 4, lat, lat, generator=g),
                face_emb=torch.randn(b, cfg.image_embed_dim, generator=g),
                audio_features=torch.randn(b, f, cfg.audio_window, cfg.audio_layers, cfg.audio_feature_dim,
                                           generator=g),
                face_region_mask=torch.rand(b, 3, f, lat * 8, lat * 8, generator=g))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (b, 4, f, lat, lat)
    assert len(seen) > 40 and all(len(shape) == 4 and shape[0] == b * f for _, shape, _ in seen)
    assert [name for name, _, contiguous in seen if not contiguous] == []


def test_sfm_on_frames_equals_sfm_on_video() -> None:
    torch.manual_seed(4)
    sfm = SelfAdaptiveFilterModule(8, SFMConfig(gate_dim=4, gate_hidden=2))
    torch.nn.init.normal_(sfm.fc[2].weight)
    with torch.no_grad():
        sfm.band_weight.normal_()
    video = torch.randn(2, 8, 3, 5, 6)
    frames = video.transpose(1, 2).flatten(0, 1)
    out = sfm(frames).view(2, 3, 8, 5, 6).transpose(1, 2)
    assert torch.equal(out, sfm(video))
    with pytest.raises(ValueError, match="SFM expects"):
        sfm(torch.randn(8, 5, 6))


def test_script_prints_the_table(perf, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="perf.singer_layout_copies"):
        assert perf.main(["--model", "tiny", "--size", "64", "--frames", "2", "--dtype", "fp32",
                          "--by-module"]) == 0
    text = caplog.text
    assert "layout copies (total)" in text and "cat (not counted)" in text and "SpatialTransformer3D" in text
