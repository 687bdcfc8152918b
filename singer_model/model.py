"""SingerNet: the whole SINGER network (Hallo backbone + MSM + SFM) as one module.

Native state-dict layout (prefix -> module):
``reference_unet.`` (SD-1.5 2D UNet without output head), ``denoising_unet.`` (3D UNet; SFM under
``denoising_unet.sfm.``), ``face_locator.``, ``imageproj.``, ``audioproj.``, ``msm.`` (SINGER's MSM).
It equals Hallo's published ``net.pth`` names for everything but the two SINGER modules, which
:mod:`singer_model.checkpoints` converts from/to the published ``hidden_spectral_weighting``/``audioembed``.
The VAE is not part of the network (see :func:`singer_model.checkpoints.load_vae`).
"""

from __future__ import annotations

import torch
from torch import nn

from singer_model.backbone.audio_proj import AudioProj
from singer_model.backbone.denoising_unet import DenoisingUNet3D
from singer_model.backbone.face_locator import FaceLocator
from singer_model.backbone.image_proj import ImageProj
from singer_model.backbone.reference_unet import ReferenceUNet
from singer_model.config import SingerConfig
from singer_model.msm import MultiScaleSpectralModule

#: prefixes Hallo stage 2 trains; SINGER additionally trains its two modules
HALLO_TRAINABLE = ("audioproj.", "audio_modules", "motion_modules")


class SingerNet(nn.Module):
    def __init__(self, cfg: SingerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SingerConfig.full()
        self.cfg = cfg
        u = cfg.unet
        self.reference_unet = ReferenceUNet.from_unet_config(u)
        self.denoising_unet = DenoisingUNet3D(u, cfg.sfm if cfg.use_sfm else None)
        self.face_locator = FaceLocator(u.block_out_channels[0], cfg.face_locator_in_channels,
                                        tuple(cfg.face_locator_channels))
        self.imageproj = ImageProj(cfg.image_embed_dim, u.cross_attention_dim, cfg.image_tokens)
        self.audioproj = AudioProj(cfg.audio_window, cfg.audio_layers, cfg.audio_feature_dim,
                                   cfg.audio_intermediate_dim, u.audio_attention_dim, cfg.audio_tokens)
        self.msm = MultiScaleSpectralModule(cfg.msm) if cfg.use_msm else None
        if cfg.gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    # ------------------------------------------------------------------ switches
    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.denoising_unet.set_gradient_checkpointing(enabled)
        self.reference_unet.set_gradient_checkpointing(enabled)

    def trainable_prefixes(self) -> tuple[str, ...]:
        """Hallo stage-2 trainables plus MSM and SFM (paper: audio projection, MSM, SFM train)."""
        extra = []
        if self.msm is not None:
            extra.append("msm.")
        if self.denoising_unet.sfm is not None:
            extra.append("denoising_unet.sfm.")
        return HALLO_TRAINABLE + tuple(extra)

    def freeze_backbone(self, trainable: tuple[str, ...] | None = None) -> list[str]:
        """Freeze every parameter not matched by ``trainable``: an entry with a dot is a name prefix, one
        without a dot a module name anywhere in the path (e.g. ``audio_modules``). Returns trainable names."""
        keys = trainable if trainable is not None else self.trainable_prefixes()
        names = []
        for name, p in self.named_parameters():
            on = any(name.startswith(k) or ("." not in k and f".{k}." in f".{name}") for k in keys)
            p.requires_grad_(on)
            if on:
                names.append(name)
        return names

    # ------------------------------------------------------------------ forward
    def encode_audio(self, audio_features: torch.Tensor, noisy_latents: torch.Tensor | None) -> torch.Tensor:
        """AudioProj, then MSM (when on) conditioned on ``noisy_latents``: -> [B, F, N, D]."""
        tokens = self.audioproj(audio_features)
        if self.msm is not None:
            if noisy_latents is None:
                raise ValueError("MSM needs the noisy latent z_t")
            tokens = self.msm(tokens, noisy_latents)
        return tokens

    def reference_features(self, ref_latents: torch.Tensor, identity_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.reference_unet.features(ref_latents, identity_tokens)

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        ref_latents: torch.Tensor | None,
        face_emb: torch.Tensor,
        audio_features: torch.Tensor,
        face_region_mask: torch.Tensor | None = None,
        full_mask: torch.Tensor | None = None,
        face_mask: torch.Tensor | None = None,
        lip_mask: torch.Tensor | None = None,
        uncond_img_fwd: bool = False,
        uncond_audio_fwd: bool = False,
        motion_scale: tuple[float, float, float] | None = None,
        audio_tokens: torch.Tensor | None = None,
        reference_features: dict[str, torch.Tensor] | None = None,
        keep_graph: bool = False,
        mask_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or v) for ``noisy_latents``.

        Shapes: ``noisy_latents`` [B, 4, F, h, w]; ``timesteps`` [B]; ``ref_latents`` [B*(1+M), 4, h, w]
        (reference image latent then M motion-frame latents per sample; M may be 0); ``face_emb`` [B, 512];
        ``audio_features`` [B, F, window, layers, 768]; ``face_region_mask`` [B, 3, F, H, W] or
        [B, 3, H, W] (pixel resolution, FaceLocator input); ``full/face/lip_mask`` [B, F, h, w] at latent
        resolution (None = ones). ``uncond_img_fwd`` drops the reference (CFG), ``uncond_audio_fwd`` zeroes
        the audio tokens (CFG). ``keep_graph`` (training): the dropped branch is still computed and multiplied
        by zero, so its trainable parameters get (zero) gradients instead of none, as DDP requires of every
        step; the prediction is the same. ``audio_tokens``/``reference_features`` reuse precomputed values
        (inference loops); ``mask_features`` a precomputed FaceLocator output [B, C, F or 1, h, w] (inference:
        computed once per clip; a zero row is the release's zeroed FaceLocator feature), used instead of
        ``face_region_mask``. Returns [B, 4, F, h, w].
        """
        identity = self.imageproj(face_emb)
        if mask_features is not None:
            mask_fea = mask_features
        else:
            mask_fea = self.face_locator(face_region_mask) if face_region_mask is not None else None
        if mask_fea is not None and mask_fea.shape[2] == 1 and noisy_latents.shape[2] > 1:
            mask_fea = mask_fea.expand(-1, -1, noisy_latents.shape[2], -1, -1)
        if audio_tokens is None:
            audio_tokens = self.encode_audio(audio_features, noisy_latents)
        if uncond_audio_fwd:
            audio_tokens = audio_tokens * 0 if keep_graph else torch.zeros_like(audio_tokens)
        ghost: torch.Tensor | None = None
        if uncond_img_fwd:
            if keep_graph and ref_latents is not None and any(p.requires_grad for p in self.reference_unet.parameters()):
                feats = self.reference_features(ref_latents, identity)
                ghost = sum(f.sum() for f in feats.values()) * 0  # type: ignore[assignment]
            reference_features = None
        elif reference_features is None and ref_latents is not None:
            reference_features = self.reference_features(ref_latents, identity)
        out = self.denoising_unet(
            noisy_latents, timesteps, identity, audio_tokens,
            mask_cond_fea=mask_fea, full_mask=full_mask, face_mask=face_mask, lip_mask=lip_mask,
            reference_features=reference_features, motion_scale=motion_scale,
        )
        return out if ghost is None else out + ghost
