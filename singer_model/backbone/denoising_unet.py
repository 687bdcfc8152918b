"""The 3D denoising UNet (Hallo's UNet3DConditionModel layout, SD-1.5 channels) with optional SFM.

Each layer of a block runs: ResNet -> spatial transformer (reference attention + identity cross-attention)
-> audio attention module -> temporal motion module (with the reference UNet's motion-frame features
prepended along time). The mid block runs ResNet, then [attention, audio, motion, ResNet]. SINGER's SFM
replaces the mid-block output. Masks are given once at latent resolution and area-resampled per level.

Between its blocks the UNet carries contiguous frames ``[(B F), C, h, w]`` (the number of frames F travels in
:class:`_Context`); it converts from / to the public ``[B, C, F, h, w]`` only at the entry and exit of
:meth:`DenoisingUNet3D.forward`. Modules that need another layout (tokens ``[(B F), h*w, C]`` in the spatial
and audio transformers, ``[(B h w), F, C]`` in the motion modules) convert once in and fold the way back
into their residual addition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn
from torch.utils.checkpoint import checkpoint

from singer_model.backbone.audio_attention import AudioTransformer3D
from singer_model.backbone.blocks import SpatialTransformer3D
from singer_model.backbone.motion_module import MotionModule
from singer_model.config import SFMConfig, UNetConfig
from singer_model.sfm import SelfAdaptiveFilterModule

RefFeatures = dict[str, torch.Tensor]
Masks = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Context:
    """Per-forward conditioning shared by every block, per frame: ``frames`` F; ``temb`` [(B F), D];
    ``context`` [(B F), T, D]; ``audio`` [(B F), N, D] or None; ``masks`` three [B, F, h, w]."""

    def __init__(self, frames: int, temb: torch.Tensor, context: torch.Tensor, audio: torch.Tensor | None,
                 masks: Masks, reference: RefFeatures | None, motion_scale: tuple[float, float, float] | None):
        bf = temb.shape[0] * frames
        self.frames = frames
        self.temb = temb.repeat_interleave(frames, dim=0)
        self.context = context if context.shape[0] == bf else context.repeat_interleave(frames, dim=0)
        self.audio = audio.flatten(0, 1) if audio is not None else None
        self.masks = masks
        self.reference = reference
        self.motion_scale = motion_scale
        self._cache: dict[tuple[int, int], Masks] = {}

    def masks_at(self, h: int, w: int) -> Masks:
        """The three masks area-resampled to h x w, as [(B F), h*w]."""
        if (h, w) not in self._cache:
            out = []
            for m in self.masks:
                b, f = m.shape[:2]
                if m.shape[-2:] != (h, w):
                    m = F.adaptive_avg_pool2d(m.reshape(b * f, 1, *m.shape[-2:]).float(), (h, w))
                out.append(m.reshape(b * f, h * w))
            self._cache[(h, w)] = (out[0], out[1], out[2])
        return self._cache[(h, w)]


class UNetBlock3D(nn.Module):
    """A down or up block; cross-attention blocks carry spatial, audio and motion modules per layer."""

    def __init__(self, *, prefix: str, n_layers: int, in_channels: list[int], out_channels: int,
                 audio_inner: list[int], cross_attn: bool, motion: bool, resample: str | None,
                 cfg: UNetConfig, temb_channels: int) -> None:
        super().__init__()
        self.prefix = prefix
        g, heads = cfg.norm_num_groups, cfg.attention_heads
        self.attentions = nn.ModuleList(
            [SpatialTransformer3D(out_channels, heads, cfg.cross_attention_dim, g) for _ in range(n_layers)]
            if cross_attn else [])
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels=cin, out_channels=out_channels, temb_channels=temb_channels, groups=g,
                          eps=cfg.norm_eps)
            for cin in in_channels])
        self.audio_modules = nn.ModuleList(
            [AudioTransformer3D(out_channels, inner, heads, cfg.audio_attention_dim, g) for inner in audio_inner]
            if cross_attn and cfg.use_audio_module else [])
        self.motion_modules = nn.ModuleList(
            [MotionModule(out_channels, cfg.motion_heads, cfg.motion_pe_max_len, g) for _ in range(n_layers)]
            if motion else [])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                            padding=1, name="op")])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
        self.gradient_checkpointing = False

    def _layer(self, i: int, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        x = self.resnets[i](x, ctx.temb)
        motion = None
        if len(self.attentions):
            name = f"{self.prefix}.attentions.{i}.transformer_blocks.0"
            ref = ctx.reference.get(name) if ctx.reference is not None else None
            x, motion = self.attentions[i](x, ctx.frames, ctx.context, ref)
        if len(self.audio_modules) and ctx.audio is not None:
            x = self.audio_modules[i](x, ctx.audio, ctx.masks_at(*x.shape[-2:]), ctx.motion_scale)
        if len(self.motion_modules):
            x = self.motion_modules[i](x, ctx.frames, motion)
        return x

    def run_layer(self, i: int, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._layer, i, x, ctx, use_reentrant=False)
        return self._layer(i, x, ctx)


class DownBlock(UNetBlock3D):
    def forward(self, x: torch.Tensor, ctx: _Context) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self.run_layer(i, x, ctx)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(UNetBlock3D):
    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], ctx: _Context,
                upsample_size: tuple[int, int] | None) -> torch.Tensor:
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self.run_layer(i, x, ctx)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, cfg: UNetConfig, temb_channels: int) -> None:
        super().__init__()
        g, heads = cfg.norm_num_groups, cfg.attention_heads
        self.attentions = nn.ModuleList([SpatialTransformer3D(channels, heads, cfg.cross_attention_dim, g)])
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb_channels, groups=g,
                          eps=cfg.norm_eps) for _ in range(2)])
        self.audio_modules = nn.ModuleList(
            [AudioTransformer3D(channels, channels, heads, cfg.audio_attention_dim, g)]
            if cfg.use_audio_module else [])
        self.motion_modules = nn.ModuleList(
            [MotionModule(channels, cfg.motion_heads, cfg.motion_pe_max_len, g)]
            if cfg.use_motion_module and cfg.motion_module_mid_block else [])
        self.gradient_checkpointing = False

    def _body(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        x = self.resnets[0](x, ctx.temb)
        ref = ctx.reference.get("mid_block.attentions.0.transformer_blocks.0") if ctx.reference else None
        x, motion = self.attentions[0](x, ctx.frames, ctx.context, ref)
        if len(self.audio_modules) and ctx.audio is not None:
            x = self.audio_modules[0](x, ctx.audio, ctx.masks_at(*x.shape[-2:]), ctx.motion_scale)
        if len(self.motion_modules):
            x = self.motion_modules[0](x, ctx.frames, motion)
        return self.resnets[1](x, ctx.temb)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._body, x, ctx, use_reentrant=False)
        return self._body(x, ctx)


class DenoisingUNet3D(nn.Module):
    """Noise predictor on video latents ``[B, 4, F, h, w]``; ``sfm`` is SINGER's SFM (None = Hallo)."""

    def __init__(self, cfg: UNetConfig, sfm: SFMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        ch = list(cfg.block_out_channels)
        n = len(ch)
        temb_ch = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch[0], temb_ch)
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        lpb = cfg.layers_per_block
        for i in range(n):
            cin = ch[max(i - 1, 0)]
            cout = ch[i]
            cross = i < n - 1
            self.down_blocks.append(DownBlock(
                prefix=f"down_blocks.{i}", n_layers=lpb, in_channels=[cin] + [cout] * (lpb - 1),
                out_channels=cout, audio_inner=[cin] + [cout] * (lpb - 1), cross_attn=cross,
                motion=cfg.use_motion_module and 2 ** i in cfg.motion_module_resolutions,
                resample="down" if i < n - 1 else None, cfg=cfg, temb_channels=temb_ch))
        self.mid_block = MidBlock(ch[-1], cfg, temb_ch)
        # SINGER's SFM on the mid-block output (registered here: the published order)
        self.sfm = SelfAdaptiveFilterModule(ch[-1], sfm) if sfm is not None else None
        rev = ch[::-1]
        for i in range(n):
            prev = rev[max(i - 1, 0)]
            cout = rev[i]
            skip_in = rev[min(i + 1, n - 1)]
            ins = [(prev if j == 0 else cout) + (skip_in if j == lpb else cout) for j in range(lpb + 1)]
            self.up_blocks.append(UpBlock(
                prefix=f"up_blocks.{i}", n_layers=lpb + 1, in_channels=ins, out_channels=cout,
                audio_inner=[skip_in] * (lpb + 1), cross_attn=i > 0,
                motion=cfg.use_motion_module and 2 ** (n - 1 - i) in cfg.motion_module_resolutions,
                resample="up" if i < n - 1 else None, cfg=cfg, temb_channels=temb_ch))
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, kernel_size=3, padding=1)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            block.gradient_checkpointing = enabled

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        audio_embedding: torch.Tensor | None,
        *,
        mask_cond_fea: torch.Tensor | None = None,
        full_mask: torch.Tensor | None = None,
        face_mask: torch.Tensor | None = None,
        lip_mask: torch.Tensor | None = None,
        reference_features: RefFeatures | None = None,
        motion_scale: tuple[float, float, float] | None = None,
    ) -> torch.Tensor:
        """``sample`` [B, 4, F, h, w]; ``timestep`` [B] or scalar; ``encoder_hidden_states`` [B, T, 768]
        (ImageProj tokens); ``audio_embedding`` [B, F, N, 768] (None = audio modules skipped);
        masks [B, F, h, w] at latent resolution (None = all ones); ``reference_features`` from
        :func:`singer_model.backbone.reference_unet.ReferenceUNet.features`. Returns [B, 4, F, h, w]."""
        b, _, f, h, w = sample.shape
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(b)
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        ones = torch.ones(b, f, h, w, device=sample.device, dtype=sample.dtype)
        masks: Masks = tuple(m if m is not None else ones for m in (full_mask, face_mask, lip_mask))  # type: ignore[assignment]
        ctx = _Context(f, temb, encoder_hidden_states, audio_embedding, masks, reference_features, motion_scale)

        # the public [B, C, F, h, w] -> frames [(B F), C, h, w], here and at the exit only
        x = self.conv_in(sample.transpose(1, 2).reshape(b * f, -1, h, w))
        if mask_cond_fea is not None:  # [B, C, F, h, w]: the sum is written in x's (frames) layout
            x = (x.view(b, f, *x.shape[1:]) + mask_cond_fea.transpose(1, 2).to(x.dtype)).flatten(0, 1)
        skips: list[torch.Tensor] = [x]
        for block in self.down_blocks:
            x, res = block(x, ctx)
            skips.extend(res)
        x = self.mid_block(x, ctx)
        if self.sfm is not None:
            x = self.sfm(x)
        for i, block in enumerate(self.up_blocks):
            size = None
            if i < len(self.up_blocks) - 1:
                size = tuple(skips[-len(block.resnets) - 1].shape[-2:])
            x = block(x, skips, ctx, size)
        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x.view(b, f, *x.shape[1:]).transpose(1, 2)
