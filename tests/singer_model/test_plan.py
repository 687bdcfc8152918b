"""singer_model.plan: parameter counts, FLOPs and activation memory measured on the meta device."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from singer_model import plan as P
from singer_model.config import SingerConfig
from singer_model.model import SingerNet

BF16 = torch.bfloat16


# ---------------------------------------------------------------------------------------------- counter path
def _meta(*shape: int, grad: bool = False) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=BF16, requires_grad=grad)


def _meta_module(factory) -> nn.Module:  # noqa: ANN001
    with torch.device("meta"):
        return factory().to(BF16)


def test_linear_flops_and_saved_bytes_exact():
    lin = _meta_module(lambda: nn.Linear(64, 32))
    x = _meta(8, 64, grad=True)
    m = P.measure(lin, lambda: lin(x).float().sum())
    assert m.forward_flops == 2 * 8 * 64 * 32
    assert m.backward_flops == 2 * (2 * 8 * 64 * 32)  # grad input + grad weight (bias grad is a sum: 0 FLOPs)
    # only the input is saved (for the weight gradient); the weight is a parameter, not an activation
    assert m.saved_bytes == x.numel() * x.element_size()

    x_nograd = _meta(8, 64)
    lin.weight.requires_grad_(False)
    lin.bias.requires_grad_(False)
    frozen = P.measure(lin, lambda: (lin(x_nograd) * _meta(8, 32, grad=True)).float().sum())
    assert frozen.forward_flops == 2 * 8 * 64 * 32
    assert frozen.backward_flops == 0  # frozen layer on a constant input: no matmul in the backward


def test_conv_flops_exact_with_and_without_input_grad():
    conv = _meta_module(lambda: nn.Conv2d(3, 8, kernel_size=3, padding=1))
    fwd = 2 * 2 * 8 * 3 * 9 * 16 * 16
    x = _meta(2, 3, 16, 16, grad=True)
    m = P.measure(conv, lambda: conv(x).float().sum())
    assert (m.forward_flops, m.backward_flops) == (fwd, 2 * fwd)
    m = P.measure(conv, lambda: conv(_meta(2, 3, 16, 16)).float().sum())
    assert (m.forward_flops, m.backward_flops) == (fwd, fwd)  # weight gradient only


def test_attention_counted_and_saved_as_the_fused_gpu_kernel():
    b, h, seq, d = 1, 2, 128, 32
    q, k, v = (_meta(b, h, seq, d, grad=True) for _ in range(3))
    holder = nn.Module()
    m = P.measure(holder, lambda: F.scaled_dot_product_attention(q, k, v).float().sum())
    assert m.forward_flops == 2 * (2 * b * h * seq * seq * d)  # QK^T and AV
    assert m.backward_flops == int(2.5 * m.forward_flops)  # PyTorch's flash-backward formula
    attn_matrix = b * h * seq * seq * 2
    qkv_out = 4 * q.numel() * q.element_size()
    assert qkv_out <= m.saved_bytes < qkv_out + attn_matrix // 4  # q, k, v, out, logsumexp; no attention matrix
    # the patch is scoped: outside it, meta SDPA is the math path again, which saves the attention matrix
    assert F.scaled_dot_product_attention is not P._sdpa_as_on_gpu
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.scaled_dot_product_attention(q, k, v)
    assert max(saved) >= attn_matrix


# ---------------------------------------------------------------------------------------------- tiny plans
@pytest.fixture(scope="module")
def tiny_plans() -> tuple[P.Plan, P.Plan]:
    kw = {"frames": 8, "size": 64, "include_encoders": False}
    return (P.make_plan(SingerConfig.tiny(), gradient_checkpointing=False, **kw),
            P.make_plan(SingerConfig.tiny(), gradient_checkpointing=True, **kw))


def test_tiny_parameter_counts_equal_a_direct_count(tiny_plans):
    plan = tiny_plans[0]
    net = SingerNet(SingerConfig.tiny())
    trainable = set(net.freeze_backbone(P.shipped_trainable()))
    params = dict(net.named_parameters())
    assert plan.params_network == sum(p.numel() for p in params.values())
    assert plan.params_trainable == sum(params[n].numel() for n in trainable)
    by_name = {c.name: c for c in plan.components}
    direct = {
        "reference_unet": [n for n in params if n.startswith("reference_unet.")],
        "motion_modules": [n for n in params if n.startswith("denoising_unet.") and ".motion_modules." in n],
        "audio_modules": [n for n in params if n.startswith("denoising_unet.") and ".audio_modules." in n],
        "sfm": [n for n in params if n.startswith("denoising_unet.sfm.")],
        "msm": [n for n in params if n.startswith("msm.")],
        "audioproj": [n for n in params if n.startswith("audioproj.")],
        "imageproj": [n for n in params if n.startswith("imageproj.")],
        "face_locator": [n for n in params if n.startswith("face_locator.")],
    }
    for comp, names in direct.items():
        assert by_name[comp].params == sum(params[n].numel() for n in names), comp
        assert by_name[comp].trainable == sum(params[n].numel() for n in names if n in trainable), comp
    # trainable: what the shipped config trains (AudioProj, MSM, SFM); everything else frozen
    assert {c.name for c in plan.components if c.trainable} == {"sfm", "msm", "audioproj"}
    assert all(c.trainable in (0, c.params) for c in plan.components)


def test_default_plan_trains_what_the_shipped_config_trains():
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(P.__file__).parent / "configs" / "singer_full.yaml").read_text())
    assert P.shipped_trainable() == tuple(shipped["train"]["trainable"])
    kw = {"frames": 8, "size": 64, "include_encoders": False}
    default = P.make_plan(SingerConfig.tiny(), **kw)
    stage2 = P.make_plan(SingerConfig.tiny(), trainable=P.STAGE2_TRAINABLE, **kw)
    assert default.trainable == P.shipped_trainable()
    by = {c.name: c.trainable for c in stage2.components}
    assert by["motion_modules"] and by["audio_modules"]
    assert stage2.params_trainable == default.params_trainable + by["motion_modules"] + by["audio_modules"]
    # training the audio and motion modules adds their weight gradients to the backward
    assert stage2.step.backward_flops > default.step.backward_flops
    assert stage2.memory.trainable_state > default.memory.trainable_state


def test_checkpointing_shrinks_activations_and_adds_recompute(tiny_plans):
    off, on = tiny_plans
    assert on.step.forward_flops == off.step.forward_flops
    assert on.step.backward_flops > off.step.backward_flops  # recomputed blocks
    # recompute adds at most one more forward of the denoising blocks
    assert on.step.backward_flops - off.step.backward_flops < off.step.forward_flops
    assert on.step.saved_bytes < off.step.saved_bytes / 5
    assert on.step.retained_bytes < off.step.retained_bytes / 5
    assert on.step.peak_bytes < off.step.peak_bytes / 2
    assert on.memory.total < off.memory.total
    # the live tracker sees what autograd saved (both exclude parameters; saved also counts batch inputs)
    assert off.step.retained_bytes == pytest.approx(off.step.saved_bytes, rel=0.1)
    assert off.step.peak_bytes >= off.step.retained_bytes


def test_format_and_main_json(tiny_plans, capsys):
    text = P.format_plans(list(tiny_plans))
    assert "checkpointing off" in text and "checkpointing on" in text and "GPU-hours" in text
    assert f"{tiny_plans[0].params_network:,}" in text
    assert P.main(["--model", "tiny", "--size", "64", "--frames", "8", "--checkpointing", "on", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1
    assert data[0]["gradient_checkpointing"] is True
    assert data[0]["step"]["total_flops"] == tiny_plans[1].step.total_flops
    assert data[0]["params_network"] == tiny_plans[1].params_network


# ---------------------------------------------------------------------------------------------- full size
@pytest.fixture(scope="module")
def full_plan() -> P.Plan:
    return P.make_plan(SingerConfig.full(), gradient_checkpointing=False)


def _published_counts(path) -> dict[str, int]:  # noqa: ANN001
    shapes = json.loads(path.read_text())
    out: dict[str, int] = {}
    for key, shape in shapes.items():
        if key.endswith("pos_encoder.pe"):  # buffers (AnimateDiff's sinusoidal tables), not parameters
            continue
        comp = P.component_of(key)
        out[comp] = out.get(comp, 0) + math.prod(shape)
    return out


def test_hallo_parameters_equal_the_published_checkpoint(checkpoint_keys):
    published = _published_counts(checkpoint_keys / "hallo_net_checkpoint.json")
    ours = {c.name: c.params for c in P.count_parameters(SingerConfig.hallo())}
    assert ours == published
    assert sum(ours.values()) == 2_423_594_644


def test_full_singer_plan_magnitudes(full_plan, checkpoint_keys):
    plan = full_plan
    by_name = {c.name: c for c in plan.components}
    # network = the Hallo checkpoint's parameters + the paper's MSM (w [4,64,64], FC 4-2-1) and SFM
    # (per-band weights [4,1280], FC 8-4-8): the published SINGER file stores the same FCs
    hallo = sum(_published_counts(checkpoint_keys / "hallo_net_checkpoint.json").values())
    singer = json.loads((checkpoint_keys / "singer_net_checkpoint.json").read_text())
    msm_fc = sum(math.prod(s) for k, s in singer.items() if k.startswith("audioembed.fc."))
    sfm_fc = sum(math.prod(s) for k, s in singer.items() if k.startswith("denoising_unet.hidden_spectral_weighting.fc."))
    assert by_name["msm"].params == 4 * 64 * 64 + msm_fc
    assert by_name["sfm"].params == 4 * 1280 + sfm_fc
    assert plan.params_network == hallo + by_name["msm"].params + by_name["sfm"].params
    # the shipped config trains AudioProj, MSM and SFM (about 36.5 M), not Hallo stage 2's 702 M
    assert plan.params_trainable == sum(by_name[c].params for c in ("audioproj", "msm", "sfm"))
    assert 36_000_000 < plan.params_trainable < 37_000_000
    # frozen encoders: sd-vae-ft-mse has 83,653,863 parameters; wav2vec2-base ~94.4 M (without a CTC head)
    assert by_name["vae (sd-vae-ft-mse)"].params == 83_653_863
    assert 94_000_000 < by_name["wav2vec2-base-960h"].params < 95_000_000

    # reference UNet: exactly a stock diffusers SD-1.5 UNet on the 1 + 2 reference latents minus its head
    from singer_model.backbone.reference_unet import build_sd15_unet2d

    with torch.device("meta"):
        stock = build_sd15_unet2d(SingerConfig.full().unet).to(BF16)
    lat = _meta(3, 4, 64, 64)
    ctx = _meta(3, 4, 768)
    stock_flops = P.count_forward_flops(lambda: stock(lat, torch.zeros(3, device="meta"), ctx))
    head = 2 * 3 * 4 * 64 * 64 * 320 * 9
    assert plan.reference_forward_flops == stock_flops - head
    # the 3D UNet runs the 2D UNet on 16 frames plus reference, audio and motion attention
    per_image = (stock_flops - head) / 3
    forward_denoising = plan.step.forward_flops - plan.reference_forward_flops
    assert 16 * per_image < forward_denoising < 3 * 16 * per_image
    assert forward_denoising < plan.step.backward_flops < 2.5 * forward_denoising
    assert 30e12 < plan.step_flops < 200e12
    assert plan.step_flops == plan.step.total_flops  # VAE not online by default
    assert 16e12 < plan.vae_encode_flops < 30e12  # ~1.1 TFLOP per 512x512 image, 19 images

    # activations without checkpointing: tens of GB, within an 80 GB GPU with the optimiser state
    assert 10 * P.GB < plan.step.peak_bytes < 80 * P.GB
    assert plan.step.retained_bytes == pytest.approx(plan.step.saved_bytes, rel=0.05)
    assert plan.memory.trainable_state == 16 * plan.params_trainable
    assert plan.memory.frozen_weights == 2 * (plan.params_network - plan.params_trainable)
    assert plan.memory.fits

    # GPU time: 17,000 steps, 4 GPUs, batch 1 per GPU
    assert (plan.steps, plan.gpus, plan.samples_per_step) == (17_000, 4, 4)
    a100 = next(g for g in plan.gpu if g.peak_tflops == 312.0)
    assert a100.step_seconds == pytest.approx(plan.step_flops / (312e12 * 0.40))
    assert a100.gpu_hours == pytest.approx(17_000 * a100.step_seconds * 4 / 3600)
    h100 = next(g for g in plan.gpu if g.peak_tflops == 989.0)
    assert h100.gpu_hours == pytest.approx(a100.gpu_hours * 312 / 989)
