"""MDX-Net vocal separation as Hallo's and SINGER's released inference runs it, without audio-separator.

Hallo's ``hallo/datasets/audio_processor.py`` separates the driving song with the ``audio-separator``
package: ``Separator(output_dir=..., output_single_stem="vocals", model_file_dir=...)``,
``load_model("Kim_Vocal_2.onnx")``, ``separate(wav)``, i.e. audio-separator's defaults: 44.1 kHz
stereo, MDX ``hop_length`` 1024, ``segment_size`` 256, ``overlap`` 0.25, ``batch_size`` 1, no denoise,
``normalization_threshold`` 0.9. The model's own parameters come from UVR's model-data table, keyed by
the MD5 of the file's last 10,000 KiB; for Kim_Vocal_2.onnx (:data:`KIM_VOCAL_2_UVR_HASH`) they are
``compensate`` 1.009, ``mdx_dim_f_set`` 3072, ``mdx_dim_t_set`` 8 (256 frames), ``mdx_n_fft_scale_set``
7680, ``primary_stem`` "Vocals" (:class:`MdxConfig`'s defaults).

:class:`MdxVocals` re-implements audio-separator's MDX path (``MDXSeparator.separate``/``demix``/
``run_model`` and its ``STFT`` class) with numpy and torch, running the ONNX file with onnxruntime:

1. the mix, ``(2, n)`` float32 at 44.1 kHz (mono is duplicated), is scaled down to peak 0.9 when louder;
2. it is padded with ``n_fft // 2`` zeros in front and to a whole number of ``chunk - n_fft`` blocks
   (``chunk = hop * (segment_size - 1)`` samples) behind, then cut into chunks every
   ``(1 - overlap) * chunk`` samples, the last one zero-padded;
3. each chunk: ``torch.stft`` (periodic Hann window of ``n_fft``, hop 1024, centred, reflect padding)
   of both channels -> ``[1, 4, dim_f, 256]`` (L re, L im, R re, R im; the bins above ``dim_f`` dropped),
   the 3 lowest bins zeroed, the network, zero bins back above ``dim_f``, ``torch.istft``;
4. the chunks are Hann-weighted (``np.hanning`` of the chunk's length), summed, divided by the summed
   weights, and the padding is cut off;
5. the output scaling, which depends on audio-separator's release (:attr:`MdxConfig.release`):

   * ``"0.17.2"`` (the version Hallo's requirements.txt pins; the default): vocals ``*= compensate``,
     then scaled down to peak 0.9 when louder;
   * ``"0.47.1"``: vocals ``*=`` the input's original peak (``compensate`` only touches the
     instrumental), then scaled down to peak 0.9 when louder (up to ``amplification_threshold`` when
     quieter, off by default).

audio-separator then writes ``int16(vocals * 32767)`` (truncating) to a 44.1 kHz stereo WAV, which Hallo
resamples to 16 kHz: :func:`as_written_pcm16` gives those samples. ``tests/shv_toolkit/test_vocals_mdx.py``
checks the whole chain against audio-separator 0.17.2 and 0.47.1 on a small random network with
Kim_Vocal_2's signature (the real weights are not shipped here).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from shv_toolkit.core.errors import MissingWeightsError

log = logging.getLogger(__name__)

#: audio-separator's / UVR's model hash of Kim_Vocal_2.onnx (MD5 of the file's last 10,240,000 bytes)
KIM_VOCAL_2_UVR_HASH = "970b3f9492014d18fefeedfe4773cb42"
#: where Hallo's README puts the model (``huggingface-cli download fudan-generative-ai/hallo
#: --local-dir ./pretrained_models``) and where its configs/inference/default.yaml reads it
HALLO_MODEL_PATH = "pretrained_models/audio_separator/Kim_Vocal_2.onnx"
MDX_RATE = 44100
_UVR_HASH_BYTES = 10000 * 1024


@dataclass(frozen=True)
class MdxConfig:
    """MDX-Net parameters. Defaults: Kim_Vocal_2.onnx run the way Hallo runs it.

    The first five fields are the model's entry in UVR's model-data table (same names); the next
    ones are audio-separator's ``mdx_params`` and ``Separator`` defaults.
    """

    compensate: float = 1.009  # vocals gain in release 0.17.2 (0.47.1 applies it to the instrumental only)
    mdx_dim_f_set: int = 3072  # frequency bins fed to the network (of n_fft // 2 + 1)
    mdx_dim_t_set: int = 8  # log2 of the network's frame count (2 ** 8 = 256)
    mdx_n_fft_scale_set: int = 7680  # STFT size
    primary_stem: str = "Vocals"  # the stem the network outputs; only "Vocals" is supported
    hop_length: int = 1024
    segment_size: int = 256  # STFT frames per chunk; must equal 2 ** mdx_dim_t_set (the ONNX path)
    overlap: float = 0.25  # share of a chunk overlapping the next one (0 <= overlap < 1)
    batch_size: int = 1  # chunks per network call; >1 is faster and equal up to float rounding
    enable_denoise: bool = False  # run the network on -spec and spec and average (UVR's denoise)
    normalization_threshold: float = 0.9  # peak above which input and output are scaled down
    amplification_threshold: float = 0.0  # release 0.47.1: peak below which the input is scaled up (0 = off)
    release: Literal["0.17.2", "0.47.1"] = "0.17.2"  # audio-separator release whose output scaling is followed

    def __post_init__(self) -> None:
        if self.primary_stem.lower() != "vocals":
            raise ValueError(f"MdxConfig.primary_stem {self.primary_stem!r}: only models whose primary stem is "
                             "'Vocals' are supported")
        if self.release not in ("0.17.2", "0.47.1"):
            raise ValueError(f"MdxConfig.release must be '0.17.2' or '0.47.1', got {self.release!r}")
        if self.segment_size != self.dim_t:
            raise ValueError(f"MdxConfig.segment_size {self.segment_size} must equal 2 ** mdx_dim_t_set = {self.dim_t} "
                             "(audio-separator runs other sizes through onnx2torch, which is not supported here)")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"MdxConfig.overlap must be in [0, 1), got {self.overlap}")
        if self.chunk_size - 2 * self.trim <= 0:
            raise ValueError(f"MdxConfig: chunk of {self.chunk_size} samples is shorter than n_fft "
                             f"{self.mdx_n_fft_scale_set}: raise segment_size or hop_length")
        if not 0 < self.mdx_dim_f_set <= self.mdx_n_fft_scale_set // 2 + 1:
            raise ValueError(f"MdxConfig.mdx_dim_f_set {self.mdx_dim_f_set} must be in 1..n_fft // 2 + 1")
        if self.batch_size < 1:
            raise ValueError(f"MdxConfig.batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_model_data(cls, model_data: dict[str, Any], **overrides: Any) -> MdxConfig:
        """From one entry of UVR's / audio-separator's MDX model-data JSON plus any run parameters."""
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown MdxConfig fields: {sorted(unknown)}")
        keys = ("compensate", "mdx_dim_f_set", "mdx_dim_t_set", "mdx_n_fft_scale_set", "primary_stem")
        missing = [k for k in keys if k not in model_data]
        if missing:
            raise ValueError(f"MDX model data lacks {missing} (a config_yaml / MDX-C model is not an MDX-Net one)")
        return cls(**{k: model_data[k] for k in keys}, **overrides)

    @property
    def dim_t(self) -> int:
        return 2 ** self.mdx_dim_t_set

    @property
    def trim(self) -> int:
        return self.mdx_n_fft_scale_set // 2

    @property
    def chunk_size(self) -> int:
        return self.hop_length * (self.segment_size - 1)


def uvr_model_hash(path: str | os.PathLike) -> str:
    """audio-separator's model hash: MD5 of the last 10,240,000 bytes (of the whole file when smaller)."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        if size >= _UVR_HASH_BYTES:
            f.seek(size - _UVR_HASH_BYTES)
        return hashlib.md5(f.read(), usedforsecurity=False).hexdigest()


def as_written_pcm16(vocals: np.ndarray) -> np.ndarray:
    """The ``(n, 2)`` int16 samples audio-separator writes to its WAV for ``vocals`` ``(2, n)``."""
    return (np.asarray(vocals, dtype=np.float32).T * 32767).astype(np.int16)


def _scale_peak(wave: np.ndarray, max_peak: float, min_peak: float | None = None) -> np.ndarray:
    """In place, as audio-separator's ``spec_utils.normalize``: down to ``max_peak`` when louder, up
    to ``min_peak`` when quieter (and not silent)."""
    maxv = np.abs(wave).max()
    if maxv > max_peak:
        wave *= max_peak / maxv
    elif min_peak is not None and 0 < maxv < min_peak:
        wave *= min_peak / maxv
    return wave


def _providers(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"MDX device must be 'cpu' or 'cuda[:N]', got {device!r}")


class MdxVocals:
    """An MDX-Net ONNX vocals model (Kim_Vocal_2 by default) run as audio-separator runs it."""

    def __init__(self, model_path: str | os.PathLike, config: MdxConfig | None = None, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.config = config or MdxConfig()
        self.model_path = Path(model_path).expanduser()
        if not self.model_path.is_file():
            raise MissingWeightsError(
                f"MDX-Net model not found: {self.model_path}. Hallo's README downloads Kim_Vocal_2.onnx with "
                f"`huggingface-cli download fudan-generative-ai/hallo --local-dir ./pretrained_models`, which "
                f"puts it at {HALLO_MODEL_PATH}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingWeightsError(f"the MDX-Net separator needs onnxruntime (pip install onnxruntime): {exc}") from exc
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        providers = _providers(device)
        available = ort.get_available_providers()
        providers = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own unexported exception classes)
            raise MissingWeightsError(f"cannot load MDX-Net model {self.model_path}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        cfg = self.config
        expected = [4, cfg.mdx_dim_f_set, cfg.dim_t]
        shape = list(inp.shape)
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)):
            raise MissingWeightsError(f"MDX-Net model {self.model_path} takes input {shape}, but its MdxConfig says "
                                      f"[batch, {', '.join(map(str, expected))}]: wrong model or wrong parameters")
        self.uvr_hash = uvr_model_hash(self.model_path)
        self.window = torch.hann_window(cfg.mdx_n_fft_scale_set, periodic=True)
        self.version = (f"mdx-onnx {self.model_path.name} uvr-md5:{self.uvr_hash[:12]} "
                        f"as audio-separator {cfg.release} onnxruntime-{ort.__version__}")
        log.info("MDX-Net %s loaded (uvr hash %s%s; providers %s)", self.model_path.name, self.uvr_hash,
                 " = Kim_Vocal_2" if self.uvr_hash == KIM_VOCAL_2_UVR_HASH else "", self.session.get_providers())

    # --------------------------------------------------------------------------------- network pass

    def _network(self, spec: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: spec.numpy()})[0]

    @torch.no_grad()
    def _run_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """``(B, 2, chunk)`` float32 -> the network's ``(B, 2, chunk)`` estimate (audio-separator's ``run_model``)."""
        cfg = self.config
        n_fft, hop = cfg.mdx_n_fft_scale_set, cfg.hop_length
        b, _, length = chunks.shape
        x = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)).reshape(-1, length)
        spec = torch.view_as_real(torch.stft(x, n_fft=n_fft, hop_length=hop, window=self.window, center=True,
                                             return_complex=True))  # (B*2, bins, T, 2)
        bins, frames = spec.shape[1], spec.shape[2]
        spec = spec.permute(0, 3, 1, 2).reshape(b, 4, bins, frames)[:, :, :cfg.mdx_dim_f_set].contiguous()
        spec[:, :, :3, :] *= 0
        if cfg.enable_denoise:
            pred = self._network(-spec) * -0.5 + self._network(spec) * 0.5
        else:
            pred = self._network(spec)
        out = torch.from_numpy(np.asarray(pred, dtype=np.float32))
        out = torch.cat([out, torch.zeros(b, 4, bins - out.shape[2], frames)], 2)
        out = out.reshape(b, 2, 2, bins, frames).reshape(-1, 2, bins, frames).permute(0, 2, 3, 1)
        wave = torch.istft(torch.complex(out[..., 0].contiguous(), out[..., 1].contiguous()), n_fft=n_fft,
                           hop_length=hop, window=self.window, center=True)
        return wave.reshape(b, 2, -1).numpy()

    def demix(self, mix: np.ndarray) -> np.ndarray:
        """``(2, n)`` float32 (already peak-limited) -> the network's ``(2, n)`` estimate, overlap-added."""
        cfg = self.config
        n = mix.shape[1]
        trim, chunk = cfg.trim, cfg.chunk_size
        gen = chunk - 2 * trim
        pad = gen + trim - n % gen
        mixture = np.concatenate((np.zeros((2, trim), np.float32), mix.astype(np.float32, copy=False),
                                  np.zeros((2, pad), np.float32)), 1)
        total = mixture.shape[1]
        step = int((1 - cfg.overlap) * chunk)
        result = np.zeros((2, total), np.float32)
        divider = np.zeros((2, total), np.float32)
        starts = list(range(0, total, step))
        for k in range(0, len(starts), cfg.batch_size):
            group = starts[k:k + cfg.batch_size]
            parts = np.zeros((len(group), 2, chunk), np.float32)
            for j, s in enumerate(group):
                part = mixture[:, s:s + chunk]
                parts[j, :, :part.shape[1]] = part
            est = self._run_chunks(parts)
            for j, s in enumerate(group):
                e = min(s + chunk, total)
                tar = est[j]
                if cfg.overlap != 0:
                    w = np.tile(np.hanning(e - s)[None, :], (2, 1))
                    tar[:, :e - s] *= w
                    divider[:, s:e] += w
                else:
                    divider[:, s:e] += 1
                result[:, s:e] += tar[:, :e - s]
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 only at the ends, in the padding cut below
            out = result / divider
        return out[:, trim:-trim][:, :n]

    # ----------------------------------------------------------------------------------- public API

    def separate(self, audio: np.ndarray, sample_rate: int = MDX_RATE) -> np.ndarray:
        """``audio`` ``(channels, n)`` or ``(n,)`` at ``sample_rate`` -> vocals ``(2, n')`` float32 at 44.1 kHz,
        the stem audio-separator writes (before its int16 conversion, :func:`as_written_pcm16`).

        Other rates are resampled to 44.1 kHz first with libsoxr "HQ" (what librosa's default
        ``soxr_hq`` does when audio-separator loads a file). Mono is duplicated to stereo; more than
        two channels are refused, as audio-separator refuses them."""
        from shv_toolkit.stages.vocals import resample

        a = np.asarray(audio, dtype=np.float32)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[0] not in (1, 2):
            raise ValueError(f"MDX separation needs mono or stereo audio shaped (channels, n), got shape {a.shape}")
        if a.shape[1] == 0:
            raise ValueError("MDX separation got no audio samples")
        if not np.isfinite(a).all():
            raise ValueError("MDX separation got non-finite audio samples")
        if int(sample_rate) != MDX_RATE:
            a = resample(a, int(sample_rate), MDX_RATE)
        mix = np.array(np.repeat(a, 2, axis=0) if a.shape[0] == 1 else a, dtype=np.float32)
        cfg = self.config
        if cfg.release == "0.17.2":
            _scale_peak(mix, cfg.normalization_threshold)
            source = self.demix(mix)
            source *= cfg.compensate
            _scale_peak(source, cfg.normalization_threshold)
        else:
            peak = np.abs(mix).max()
            _scale_peak(mix, cfg.normalization_threshold, cfg.amplification_threshold)
            source = self.demix(mix) * peak
            _scale_peak(source, cfg.normalization_threshold, cfg.amplification_threshold)
        return np.ascontiguousarray(source, dtype=np.float32)


class MdxSeparator:
    """:class:`shv_toolkit.stages.vocals.Separator` over :class:`MdxVocals` (vocals backend ``"mdx"``):
    audio-separator's 44.1 kHz stereo vocals, averaged to mono and resampled to 16 kHz."""

    input_rate = MDX_RATE
    input_channels = 2

    def __init__(self, model_path: str | os.PathLike, config: MdxConfig | None = None, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.mdx = MdxVocals(model_path, config, device=device, threads=threads)
        self.name = f"mdx:{self.mdx.model_path.stem}"
        self.version = self.mdx.version

    def separate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from shv_toolkit.stages.vocals import OUTPUT_RATE, _as_channels, _fit_channels, _fix_length, resample

        a = _as_channels(audio)
        n_out = int(round(a.shape[1] * OUTPUT_RATE / sample_rate))
        if a.shape[1] == 0:
            return np.zeros(0, np.float32)
        if a.shape[0] > 2:
            a = _fit_channels(a, 2)
        vocals = self.mdx.separate(a, sample_rate).mean(0)
        return _fix_length(resample(vocals, MDX_RATE, OUTPUT_RATE), n_out)
