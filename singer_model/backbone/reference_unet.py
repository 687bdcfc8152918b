"""The 2D reference UNet: SD-1.5's UNet2DConditionModel (diffusers) without ``conv_norm_out``/``conv_out``.

It runs on the reference image latent (and motion-frame latents) at timestep 0 with the identity tokens as
context; the input of every spatial self-attention (``norm1`` output of each transformer block) is captured
and handed to the denoising UNet, whose self-attention attends to ``[own tokens, reference tokens]``
(reference attention, see :mod:`singer_model.backbone.reference_attention`).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from singer_model.backbone.reference_attention import capture_reference_features
from singer_model.config import UNetConfig


def build_sd15_unet2d(cfg: UNetConfig, cls: type[UNet2DConditionModel] = UNet2DConditionModel) -> UNet2DConditionModel:
    """A diffusers UNet2DConditionModel with SD-1.5's layout scaled by ``cfg``."""
    n = len(cfg.block_out_channels)
    return cls(
        sample_size=cfg.sample_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_heads,
        norm_num_groups=cfg.norm_num_groups,
        norm_eps=cfg.norm_eps,
    )


class ReferenceUNet(UNet2DConditionModel):
    """diffusers' UNet2DConditionModel without the output head; parameter names are SD-1.5's own."""

    @classmethod
    def from_unet_config(cls, cfg: UNetConfig) -> ReferenceUNet:
        unet = build_sd15_unet2d(cfg, cls)
        unet.conv_norm_out = None
        unet.conv_act = None
        unet.conv_out = None
        return unet

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.enable_gradient_checkpointing()
        else:
            self.disable_gradient_checkpointing()

    def run(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> None:
        """UNet body up to the last up block (SD-1.5 forward without the output head)."""
        u = self
        t = timestep.expand(latents.shape[0]) if timestep.ndim else timestep[None].expand(latents.shape[0])
        emb = u.time_embedding(u.time_proj(t).to(latents.dtype))
        x = u.conv_in(latents)
        skips: tuple[torch.Tensor, ...] = (x,)
        for block in u.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=context)
            else:
                x, res = block(hidden_states=x, temb=emb)
            skips += res
        x = u.mid_block(x, emb, encoder_hidden_states=context)
        for i, block in enumerate(u.up_blocks):
            res = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            size = skips[-1].shape[2:] if i < len(u.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context,
                          upsample_size=size)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size)

    def features(self, latents: torch.Tensor, context: torch.Tensor,
                 timestep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reference features for every spatial transformer block, keyed by its module path.

        ``latents`` [B*(1+M), 4, h, w] ordered sample-major (reference image then M motion frames of each
        sample); ``context`` [B, T, D] identity tokens (repeated to the latent batch).
        """
        if context.shape[0] != latents.shape[0]:
            context = context.repeat_interleave(latents.shape[0] // context.shape[0], dim=0)
        if timestep is None:
            timestep = torch.zeros((), dtype=torch.long, device=latents.device)
        with capture_reference_features(self) as bank:
            self.run(latents, timestep, context)
        return dict(bank)
