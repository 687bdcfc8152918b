"""Haar DWT/IWT, MSM and SFM: exactness, shapes, gradients and the effect of their weights."""

from __future__ import annotations

import torch

from singer_model.config import MSMConfig, SFMConfig
from singer_model.msm import MultiScaleSpectralModule
from singer_model.sfm import SelfAdaptiveFilterModule
from singer_model.wavelets import analysis_matrix, dwt2, iwt2, weighted_band_filter


def test_dwt_perfect_reconstruction_and_orthogonality() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 10, generator=g, dtype=torch.float64)
    bands = dwt2(x)
    assert bands.shape == (4, 2, 3, 3, 5)
    assert torch.allclose(iwt2(bands), x, atol=1e-12)
    # energy preserved (orthonormal)
    assert torch.allclose((bands ** 2).sum(), (x ** 2).sum())
    # equals the separable matrix form A_h X A_w^T with L=[1,1]/sqrt2, H=[-1,1]/sqrt2
    ah, aw = analysis_matrix(6), analysis_matrix(10)
    assert torch.allclose(ah @ ah.T, torch.eye(6, dtype=torch.float64))
    y = ah @ x @ aw.T
    ll, lh = y[..., :3, :5], y[..., :3, 5:]
    hl, hh = y[..., 3:, :5], y[..., 3:, 5:]
    assert torch.allclose(torch.stack((ll, lh, hl, hh)), bands, atol=1e-12)
    # constant input: only LL is non-zero
    c = dwt2(torch.ones(4, 4, dtype=torch.float64))
    assert torch.allclose(c[0], torch.full((2, 2), 2.0, dtype=torch.float64)) and c[1:].abs().max() == 0


def test_band_filter_odd_sizes_and_identity() -> None:
    x = torch.randn(2, 5, 7)
    assert torch.allclose(weighted_band_filter(x, torch.ones(4, 1, 1, 1)), x, atol=1e-6)
    only_ll = weighted_band_filter(x, torch.tensor([1.0, 0, 0, 0]).view(4, 1, 1, 1))
    assert only_ll.shape == x.shape and not torch.allclose(only_ll, x)


def _release_msm_reference(mod: MultiScaleSpectralModule, buffer: torch.Tensor, audio: torch.Tensor,
                           z: torch.Tensor) -> torch.Tensor:
    """Independent re-statement of the release's MSM forward (einsum over the batch-shaped buffer, chunk
    along dim 3, FC over channels, sum over frames, per-band scaling via the matrix DWT)."""
    x = torch.einsum("bcfwh,dcewh->bcfwh", z, buffer)
    y = torch.stack(torch.chunk(x, 4, 3), 0).sum(dim=(4, 5))  # [4, n, c, f]
    gates = mod.fc(y.transpose(3, 2)).sum(2).view(4, -1)  # [4, n]
    plane = audio.transpose(3, 1)  # [n, D, N, F]
    ah, aw = analysis_matrix(plane.shape[-2], torch.float32), analysis_matrix(plane.shape[-1], torch.float32)
    coef = ah @ plane @ aw.T
    nh, nw = plane.shape[-2] // 2, plane.shape[-1] // 2
    scale = torch.ones_like(coef)
    for n in range(plane.shape[0]):
        scale[n, :, :nh, :nw] = gates[0, n]
        scale[n, :, :nh, nw:] = gates[1, n]
        scale[n, :, nh:, :nw] = gates[2, n]
        scale[n, :, nh:, nw:] = gates[3, n]
    out = ah.T @ (coef * scale) @ aw
    return out.transpose(3, 1)


def test_msm_matches_release_semantics_with_summed_buffer() -> None:
    torch.manual_seed(0)
    cfg = MSMConfig(latent_size=8, frame_reduction="sum")
    mod = MultiScaleSpectralModule(cfg)
    buffer = torch.randn(3, 4, 14, 8, 8) * 0.05  # release: [bs, C, 14, H, W]
    with torch.no_grad():
        mod.w.copy_(buffer.sum(dim=(0, 2)))
    audio = torch.randn(2, 6, 4, 5)  # [B, F, N, D]
    z = torch.randn(2, 4, 6, 8, 8)
    ours = mod(audio, z)
    ref = _release_msm_reference(mod, buffer, audio, z)
    assert ours.shape == audio.shape
    assert torch.allclose(ours, ref, atol=1e-5)


def test_msm_weights_matter_and_are_batch_and_frame_independent() -> None:
    torch.manual_seed(1)
    mod = MultiScaleSpectralModule(MSMConfig(latent_size=8))
    assert tuple(mod.w.shape) == (4, 8, 8)
    audio = torch.randn(1, 4, 4, 6)
    z = torch.randn(1, 4, 4, 8, 8)
    out = mod(audio, z)
    # batch independence: a sample gives the same output alone or inside a batch
    out2 = mod(torch.cat([audio, torch.randn(1, 4, 4, 6)]), torch.cat([z, torch.randn(1, 4, 4, 8, 8)]))
    assert torch.allclose(out2[:1], out, atol=1e-6)
    # mean reduction: repeating every frame does not change the gates
    a1 = mod.band_weights(z)
    a2 = mod.band_weights(torch.cat([z, z], dim=2))
    assert torch.allclose(a1, a2, atol=1e-6)
    # other frame counts and latent sizes run
    assert mod(torch.randn(1, 5, 4, 6), torch.randn(1, 4, 5, 12, 16)).shape == (1, 5, 4, 6)
    # changing w changes the output; gradients reach w and the FC
    with torch.no_grad():
        mod.w.mul_(-3.0)
    assert not torch.allclose(mod(audio, z), out)
    mod(audio, z).square().sum().backward()
    assert mod.w.grad is not None and mod.w.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.fc.parameters())


def test_sfm_identity_init_shapes_grads_and_band_effect() -> None:
    torch.manual_seed(2)
    sfm = SelfAdaptiveFilterModule(16, SFMConfig(gate_dim=4, gate_hidden=2))
    h = torch.randn(2, 16, 3, 4, 4, requires_grad=True)
    out = sfm(h)
    assert out.shape == h.shape
    assert torch.allclose(out, h, atol=1e-6)  # identity at initialisation
    out.square().sum().backward()
    assert sfm.band_weight.grad is not None and sfm.band_weight.grad.abs().sum() > 0
    assert sfm.fc[2].weight.grad is not None and sfm.fc[2].weight.grad.abs().sum() > 0
    # zeroing the three detail bands keeps only the 2x2 block means (times the gate)
    with torch.no_grad():
        sfm.band_weight[1:] = 0.0
    lowpassed = sfm(h.detach())
    block_mean = torch.nn.functional.avg_pool2d(h.detach().flatten(0, 1), 2).repeat_interleave(2, -1) \
        .repeat_interleave(2, -2).view_as(h)
    assert torch.allclose(lowpassed, block_mean * 2 * 0.5, atol=1e-5)
    # odd widths (gate resampling + padding) keep the shape
    assert sfm(torch.randn(1, 16, 2, 3, 5)).shape == (1, 16, 2, 3, 5)


def test_sfm_matches_release_weight_sum() -> None:
    torch.manual_seed(3)
    sfm = SelfAdaptiveFilterModule(8, SFMConfig(gate_dim=4, gate_hidden=2))
    published = torch.randn(4, 1, 8, 2, 2)
    torch.nn.init.normal_(sfm.fc[2].weight)
    with torch.no_grad():
        sfm.band_weight.copy_(published.sum(dim=(1, 3, 4)))
    h = torch.randn(1, 8, 2, 4, 4)
    # release: einsum('n b c h w, n m c s t -> n b c h w') over the DWT bands of (b f) frames, then IDWT
    frames = h.permute(0, 2, 1, 3, 4).flatten(0, 1)
    weighted = torch.einsum("nbchw,nmcst->nbchw", dwt2(frames), published)
    ref = sfm.fc(frames) * iwt2(weighted)
    ref = ref.view(1, 2, 8, 4, 4).permute(0, 2, 1, 3, 4)
    assert torch.allclose(sfm(h), ref, atol=1e-5)
