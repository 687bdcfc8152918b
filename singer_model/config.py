"""Typed configuration of the SINGER network (and of Hallo, its backbone, with both SINGER modules off).

Defaults are the published full-size configuration (``hallo_summary.json`` / ``singer_summary.json``:
SD-1.5 UNet channels, AnimateDiff "Vanilla" motion modules, Hallo audio modules). ``SingerConfig.tiny()``
is the same architecture with few channels for CPU tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

#: what the shipped training config trains (``train.trainable`` of configs/singer_full.yaml and
#: ``TrainSection``'s default): AudioProj, MSM and SFM, as the paper trains
SHIPPED_TRAINABLE: tuple[str, ...] = ("audioproj.", "msm.", "denoising_unet.sfm.")

@dataclass(frozen=True)
class UNetConfig:
    """Shared by the 2D reference UNet and the 3D denoising UNet (SD-1.5 layout)."""

    in_channels: int = 4  #: latent channels
    out_channels: int = 4
    sample_size: int = 64  #: latent side at the training resolution (512 px / 8)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    #: number of attention heads (SD-1.5's config field ``attention_head_dim: 8`` is in fact the head count)
    attention_heads: int = 8
    cross_attention_dim: int = 768  #: ImageProj token width (the reference/identity condition)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    #: motion (temporal) modules, AnimateDiff "Vanilla" v2 layout
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = True
    motion_heads: int = 8
    motion_pe_max_len: int = 32  #: longest clip (incl. motion frames) the temporal position encoding covers
    #: Hallo's hierarchical audio attention modules
    use_audio_module: bool = True
    audio_attention_dim: int = 768  #: AudioProj token width


@dataclass(frozen=True)
class MSMConfig:
    """Multi-scale Spectral Module (paper Eq. 1-4).

    ``w`` is one trainable matrix of the latent's size ``[latent_channels, latent_size, latent_size]``; it is
    independent of batch size and frame count (unlike the release's ``[batch, 4, 14, 64, 64]`` buffer).
    Latents of another size use ``w`` bilinearly resized, with the pooled sum rescaled by the area ratio.
    The per-band gate is ``sigmoid(FC(.))`` per frame, reduced over frames with ``frame_reduction`` and
    multiplied by ``band_scale``: ``"mean"`` makes it frame-count independent; the release sums over frames
    (trained with 14, run at 16: ``frame_reduction="sum"``, the ``singer_release`` preset), which ``mean`` with
    ``band_scale=14`` reproduces only at 14 frames (``singer_published``).

    ``identity_init``: the last FC layer starts at zero, so every gate starts at ``sigmoid(0) * band_scale``;
    with ``band_scale`` 2 and ``mean`` the module starts as the identity and training starts from Hallo's
    audio tokens (the release's random init scales them by about 0.45). ``condition``: ``"every_step"``
    conditions the gates on the DDIM step's ``z_t`` (the paper's Eq. 2); ``"initial_noise"`` once per window
    on the initial noise, as the release's pipeline.
    """

    latent_channels: int = 4
    latent_size: int = 64
    fc_hidden: int = 2  #: release: Linear(4, 2) -> ReLU -> Linear(2, 1) -> Sigmoid
    frame_reduction: Literal["mean", "sum"] = "mean"
    band_scale: float = 1.0
    identity_init: bool = False
    condition: Literal["every_step", "initial_noise"] = "every_step"


@dataclass(frozen=True)
class SFMConfig:
    """Self-adaptive Filter Module (paper Eq. 5-8), applied to the mid-block output of the denoising UNet.

    ``gate_dim``: the FC of ``sigmoid(FC(H_t))`` runs over the last (width) axis of the mid features, as in
    the release (8 = 512 px / 64). Features of another width are linearly resampled to ``gate_dim`` for the
    gate and back. ``init_band_weight`` 2.0 with a zero last FC layer makes the module the identity at
    initialisation (sigmoid(0) * 2 = 1) so training starts from the pretrained Hallo behaviour.
    """

    gate_dim: int = 8
    gate_hidden: int = 4
    init_band_weight: float = 2.0
    #: trailing dims of the release's weight [4, 1, C, 4, 4] (only used to write the published layout)
    published_tail: tuple[int, int, int] = (1, 4, 4)


@dataclass(frozen=True)
class SingerConfig:
    """Whole network. ``use_msm=False, use_sfm=False`` is Hallo."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    #: starts as the identity (gates 2 * sigmoid(0) = 1): training starts from Hallo's behaviour, as SFM's
    msm: MSMConfig = field(default_factory=lambda: MSMConfig(band_scale=2.0, identity_init=True))
    sfm: SFMConfig = field(default_factory=SFMConfig)
    use_msm: bool = True
    use_sfm: bool = True
    # FaceLocator (face-region mask -> residual added after conv_in)
    face_locator_in_channels: int = 3
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)
    # ImageProj: 512-d face identity embedding -> 4 tokens of cross_attention_dim
    image_embed_dim: int = 512
    image_tokens: int = 4
    # AudioProj: wav2vec2 features (12 layers, 768 wide) over a 5-frame window -> 32 tokens
    audio_window: int = 5
    audio_layers: int = 12
    audio_feature_dim: int = 768
    audio_intermediate_dim: int = 512
    audio_tokens: int = 32
    #: frames of the previous window given to the reference UNet after the reference image (Hallo: 2)
    n_motion_frames: int = 2
    gradient_checkpointing: bool = False

    @classmethod
    def full(cls, **overrides: Any) -> SingerConfig:
        """The paper's SINGER at full size (SD-1.5 backbone, 512x512)."""
        return replace(cls(), **overrides)

    @classmethod
    def hallo(cls, **overrides: Any) -> SingerConfig:
        """Hallo: SINGER without MSM and SFM."""
        return replace(cls(use_msm=False, use_sfm=False), **overrides)

    @classmethod
    def singer_published(cls, **overrides: Any) -> SingerConfig:
        """Full size, MSM gate reduced like the release at its 14 training frames (see MSMConfig)."""
        return replace(cls(msm=MSMConfig(frame_reduction="mean", band_scale=14.0)), **overrides)

    @classmethod
    def singer_release(cls, **overrides: Any) -> SingerConfig:
        """Full size with the release's MSM semantics: gates summed over the window's frames (16 at inference)
        and conditioned once per window on the initial noise (``yl4467/singer``'s pipeline)."""
        return replace(cls(msm=MSMConfig(frame_reduction="sum", band_scale=1.0, condition="initial_noise")), **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> SingerConfig:
        """Same architecture with few channels for CPU tests: 64x64 pixels -> 8x8 latents."""
        unet = UNetConfig(
            sample_size=8,
            block_out_channels=(16, 32, 32, 32),
            layers_per_block=1,
            attention_heads=2,
            cross_attention_dim=16,
            norm_num_groups=8,
            motion_heads=2,
            motion_pe_max_len=32,
            audio_attention_dim=16,
        )
        base = cls(
            unet=unet,
            msm=MSMConfig(latent_size=8, band_scale=2.0, identity_init=True),
            sfm=SFMConfig(gate_dim=1, gate_hidden=2),
            face_locator_channels=(4, 8, 8, 8),
            image_embed_dim=8,
            image_tokens=2,
            audio_window=3,
            audio_layers=2,
            audio_feature_dim=8,
            audio_intermediate_dim=16,
            audio_tokens=4,
            n_motion_frames=2,
        )
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SingerConfig:
        data = dict(data)
        unet = UNetConfig(**_tuples(data.pop("unet", {})))
        msm = MSMConfig(**_tuples(data.pop("msm", {})))
        sfm = SFMConfig(**_tuples(data.pop("sfm", {})))
        return cls(unet=unet, msm=msm, sfm=sfm, **_tuples(data))


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
