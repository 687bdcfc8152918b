"""LSE-D and LSE-C: lip-sync error distance and confidence with SyncNet (Prajwal et al. 2020).

Reference: ``SyncNetInstance.evaluate`` and ``run_pipeline.py`` of joonson/syncnet_python, as used by
Wav2Lip and every later talking/singing-head paper. The pipeline here follows it step by step:

1. **Inputs.** The generated clip's frames (25 fps) with the *ground truth's* audio (the driving
   audio), aligned by :func:`benchmark.metrics.base.align`; audio as 16 kHz mono, converted to 16-bit
   PCM values exactly as FFmpeg's ``pcm_s16le`` does (``rint(x * 32768)``, clipped), because the
   reference feeds the raw int16 samples to the MFCC.
2. **Face track.** A face detector runs on every frame; detections are linked into tracks with the
   reference's rules (IoU > 0.5 with the track's previous box, at most ``num_failed_det`` = 25 frames
   without a detection, boxes linearly interpolated over gaps). The longest track is scored.
3. **Crop.** Per frame: box half-size ``bs = max(w, h) / 2`` and centre, each median-filtered over
   the track (kernel 13, zero-padded like ``scipy.signal.medfilt``); the frame is padded by
   ``int(bs * (1 + 2 cs))`` pixels of value 110 and cut to rows ``[cy - bs, cy + bs (1 + 2 cs))``,
   columns ``[cx - bs (1 + cs), cx + bs (1 + cs))`` with crop scale ``cs = 0.4``, then resized to
   224x224 (bilinear); BGR, values 0..255, not normalised. Audio is cut to the track's time span.
4. **Features.** 13 MFCC at 100 Hz (python_speech_features defaults, reproduced by :func:`mfcc`);
   ``min_length = min(T, floor(n_samples / 640))``, windows ``i = 0 .. min_length - 6``: frames
   ``i .. i+4`` (``(3, 5, 224, 224)``) against MFCC columns ``4 i .. 4 i + 19`` (``(1, 13, 20)``).
5. **Offsets.** For each window, distances between its video embedding and the audio embeddings of
   windows ``i - 15 .. i + 15`` (zero vectors outside the clip: ``calc_pdist``), averaged over
   windows per offset. ``LSE-D = min``, ``LSE-C = median - min`` of the 31 mean distances,
   ``offset = 15 - argmin`` (frames; positive = audio leads the video).

Documented differences from the reference:

* **Face detector.** The reference uses S3FD (``sfd_face.pth``, a download). Here the default is
  MediaPipe's BlazeFace short-range detector, whose weights ship in the ``mediapipe`` wheel, so LSE
  runs offline. BlazeFace boxes are tighter than S3FD's (roughly brows to chin rather than
  forehead to chin), so the 0.4-scaled crop covers a slightly smaller, lower area; absolute values
  can differ from an S3FD run by a small amount. Any callable ``frame_rgb -> (K, 5) boxes`` can be
  passed as ``detector`` (e.g. an S3FD wrapper) to reproduce the reference exactly.
* **Short tracks.** The reference drops face tracks of 100 frames or fewer (``min_track``), which
  would drop every 2 s evaluation clip. Here a track is scored when it has at least
  ``min_track = 6`` frames, the fewest for which the reference's window loop yields one window.
  The reference also drops faces smaller than 100 px (``min_face_size``); that rule is off by
  default (``min_face_size = 0``) so that low-resolution generators are scored, not skipped.
* **Smoothing kernel.** The median filter's kernel is 13 as in the reference, reduced to the
  largest odd number <= the track length for tracks shorter than 13 frames.
* **No scene cut detection and no lossy round trip.** Clips are single shots; the reference's
  intermediate JPEG frames and XVID crop file are skipped (frames go to the network losslessly).

Aggregate: LSE-D and LSE-C are each averaged over clips (clips without a usable face track are
listed in ``extras["failed"]`` and excluded). The best offset of each clip is in the extras.
"""

from __future__ import annotations

import decimal
import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from benchmark.extractors.syncnet import SyncNet, load_syncnet
from benchmark.metrics.base import Clip, Metric, MetricInputError, MetricResult, align
from benchmark.protocol import Protocol, get_protocol

log = logging.getLogger(__name__)

VIDEO_WINDOW = 5  # frames per SyncNet video input (0.2 s at 25 fps)
AUDIO_WINDOW = 20  # MFCC frames per SyncNet audio input (0.2 s at 100 Hz)
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
FPS = 25.0
SAMPLE_RATE = 16000
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance default: ||x1 - x2 + eps||

FaceDetector = Callable[[np.ndarray], np.ndarray]
"""``frame_rgb (H, W, 3) uint8 -> (K, 5) float array of [x1, y1, x2, y2, score]`` in pixels."""


# ---------------------------------------------------------------------------------------- audio


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(nfilt: int, nfft: int, sample_rate: int, lowfreq: float, highfreq: float) -> np.ndarray:
    """Triangular mel filters ``(nfilt, nfft // 2 + 1)`` on FFT bins ``floor((nfft + 1) f / sr)``,
    the construction of python_speech_features (peaks at 1, edges on integer bins)."""
    mel = np.linspace(_hz_to_mel(lowfreq), _hz_to_mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel) / sample_rate)
    k = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        fall = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    fb = rise + fall
    fb.setflags(write=False)
    return fb


def mfcc(
    signal: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    lowfreq: float = 0.0,
    highfreq: float | None = None,
    preemph: float = 0.97,
    ceplifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCC ``(n_frames, numcep)``, numerically the ``python_speech_features.mfcc`` of version 0.6
    with its defaults (the features syncnet_python computes): pre-emphasis, rectangular 25 ms
    frames every 10 ms (the last one zero-padded), power spectrum ``|rfft_512|^2 / 512``, 26 mel
    filters, log, orthonormal DCT-II, sinusoidal lifter 22, coefficient 0 replaced by log frame
    energy. ``signal`` is used at its own scale (syncnet_python passes int16 sample values)."""
    from scipy.fft import dct

    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise MetricInputError("MFCC of an empty signal")
    highfreq = highfreq or sample_rate / 2
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    n = x.size
    n_frames = 1 if n <= frame_len else 1 + math.ceil((n - frame_len) / frame_step)
    padded = np.concatenate([x, np.zeros((n_frames - 1) * frame_step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n_frames)[:, None]
    frames = padded[idx]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    tiny = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy[energy == 0] = tiny
    feat = power @ mel_filterbank(nfilt, nfft, sample_rate, float(lowfreq), float(highfreq)).T
    feat[feat == 0] = tiny
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cep = cep * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    if append_energy:
        cep[:, 0] = np.log(energy)
    return cep


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 sample values as FFmpeg's ``pcm_s16le`` encoder writes them."""
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a
    return np.clip(np.rint(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------- offset search


def offset_distances(
    video_emb: np.ndarray | torch.Tensor, audio_emb: np.ndarray | torch.Tensor, vshift: int = 15
) -> np.ndarray:
    """``calc_pdist`` of syncnet_python: ``(N, 2 vshift + 1)`` distances.

    Entry ``[i, j]`` is ``|| v_i - a_{i + j - vshift} + eps ||_2`` (torch's ``pairwise_distance``
    with eps 1e-6), where audio embeddings outside ``0..N-1`` are zero vectors.
    """
    v = torch.as_tensor(video_emb, dtype=torch.float32)
    a = torch.as_tensor(audio_emb, dtype=torch.float32)
    if v.ndim != 2 or v.shape != a.shape:
        raise ValueError(
            f"embeddings must be two equal (N, D) arrays, got {tuple(v.shape)} and {tuple(a.shape)}"
        )
    win = 2 * vshift + 1
    a_pad = torch.nn.functional.pad(a, (0, 0, vshift, vshift))
    idx = torch.arange(v.shape[0])[:, None] + torch.arange(win)[None, :]
    diff = v[:, None, :] - a_pad[idx] + PAIRWISE_EPS
    return torch.linalg.vector_norm(diff, dim=-1).double().numpy()


@dataclass(frozen=True)
class SyncScores:
    """Result of the offset search for one clip."""

    lse_d: float  # min over offsets of the mean distance
    lse_c: float  # median - min of the mean distances
    offset: int  # vshift - argmin, in frames
    mean_dists: tuple[float, ...]  # mean distance per offset, offsets +vshift .. -vshift
    n_windows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_scores(dists: np.ndarray, vshift: int | None = None) -> SyncScores:
    """LSE-D / LSE-C / offset from ``offset_distances`` output, as ``SyncNetInstance.evaluate``:
    mean over windows per offset, min (first index on ties) and ``torch.median`` (the lower
    middle value for an even count)."""
    d = np.asarray(dists, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] % 2 == 0:
        raise ValueError(f"distances must be (N >= 1, 2 vshift + 1), got {d.shape}")
    vs = (d.shape[1] - 1) // 2 if vshift is None else vshift
    mdist = d.mean(axis=0)
    i_min = int(np.argmin(mdist))
    median = float(np.sort(mdist)[(mdist.size - 1) // 2])
    lo = float(mdist[i_min])
    return SyncScores(lo, median - lo, vs - i_min, tuple(float(x) for x in mdist), int(d.shape[0]))


# ------------------------------------------------------------------------------ face tracking


@dataclass
class LSEConfig:
    """Conventions of the LSE pipeline (defaults: syncnet_python, except where the module doc says)."""

    crop_scale: float = 0.4  # run_pipeline --crop_scale
    size: int = 224  # crop side fed to SyncNet
    vshift: int = 15  # offsets -vshift..+vshift (run_syncnet --vshift)
    batch_size: int = 20  # windows per forward pass (run_syncnet --batch_size)
    min_track: int = 6  # frames; reference 100 (see module doc)
    num_failed_det: int = 25  # frames without detection before a track stops
    iou_threshold: float = 0.5  # IoU to extend a track
    min_face_size: float = 0.0  # px, mean box side; reference 100 (see module doc)
    smooth_kernel: int = 13  # median filter over box centre and size
    pad_value: int = 110  # border colour when the crop leaves the frame
    detector_model: int = 0  # MediaPipe model_selection: 0 short range, 1 full range
    min_detection_confidence: float = 0.5

    @classmethod
    def from_protocol(cls, protocol: Protocol, **overrides: Any) -> LSEConfig:
        return cls(
            crop_scale=protocol.lse_crop_scale,
            size=protocol.lse_size,
            vshift=protocol.lse_vshift,
            **overrides,
        )


class MediapipeFaceDetector:
    """BlazeFace via :class:`shv_toolkit.stages.faces.FaceDetector` (weights inside the ``mediapipe``
    wheel, the dataset builder's detector): ``frame_rgb -> (K, 5)`` pixel boxes, best first."""

    def __init__(self, model_selection: int = 0, min_confidence: float = 0.5) -> None:
        from shv_toolkit.config import FaceConfig
        from shv_toolkit.stages.faces import FaceDetector as _Detector

        self.name = f"mediapipe-blazeface-{'short' if model_selection == 0 else 'full'}-range"
        self._det = _Detector(
            FaceConfig(model_selection=model_selection, min_detection_confidence=min_confidence)
        )

    def __call__(self, frame_rgb: np.ndarray) -> np.ndarray:
        h, w = frame_rgb.shape[:2]
        boxes = [[d.x0 * w, d.y0 * h, d.x1 * w, d.y1 * h, d.score] for d in self._det.detect(frame_rgb)]
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 5)

    def close(self) -> None:
        self._det.close()


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (reference formula)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceTrack:
    frames: np.ndarray  # (L,) consecutive frame indices
    boxes: np.ndarray  # (L, 4) x1 y1 x2 y2, interpolated over missed detections


def build_tracks(detections: Sequence[np.ndarray], cfg: LSEConfig) -> list[FaceTrack]:
    """Link per-frame detections into tracks (reference ``track_shot`` rules, one face per frame
    per track), interpolate missed frames, keep tracks of ``>= min_track`` frames."""
    pool = [[list(map(float, b[:4])) for b in np.asarray(d).reshape(-1, 5)] for d in detections]
    tracks: list[FaceTrack] = []
    while True:
        seq: list[tuple[int, list[float]]] = []
        for f, faces in enumerate(pool):
            if not faces:
                continue
            if not seq:
                seq.append((f, faces.pop(0)))
                continue
            if f - seq[-1][0] > cfg.num_failed_det:
                break
            scores = [iou(b, seq[-1][1]) for b in faces]
            j = int(np.argmax(scores))
            if scores[j] > cfg.iou_threshold:
                seq.append((f, faces.pop(j)))
        if not seq:
            break
        fr = np.array([s[0] for s in seq])
        bx = np.array([s[1] for s in seq])
        span = np.arange(fr[0], fr[-1] + 1)
        interp = np.stack([np.interp(span, fr, bx[:, c]) for c in range(4)], axis=1)
        side = max(np.mean(interp[:, 2] - interp[:, 0]), np.mean(interp[:, 3] - interp[:, 1]))
        if len(span) >= cfg.min_track and side > cfg.min_face_size:
            tracks.append(FaceTrack(span, interp))
    return tracks


def crop_track(frames_rgb: np.ndarray, track: FaceTrack, cfg: LSEConfig) -> np.ndarray:
    """Reference ``crop_video``: smoothed, padded, 0.4-scaled crops -> ``(L, size, size, 3)`` BGR."""
    import cv2
    from scipy.signal import medfilt

    b = track.boxes
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    cx = (b[:, 0] + b[:, 2]) / 2
    k = min(cfg.smooth_kernel, len(s) if len(s) % 2 else len(s) - 1)
    if k > 1:
        s, cx, cy = (medfilt(v, kernel_size=k) for v in (s, cx, cy))
    cs = cfg.crop_scale
    out = np.empty((len(track.frames), cfg.size, cfg.size, 3), np.uint8)
    for i, f in enumerate(track.frames):
        bs = float(s[i])
        pad = int(bs * (1 + 2 * cs))
        img = cv2.copyMakeBorder(
            np.ascontiguousarray(frames_rgb[f, :, :, ::-1]),
            pad,
            pad,
            pad,
            pad,
            cv2.BORDER_CONSTANT,
            value=(cfg.pad_value,) * 3,
        )
        my, mx = cy[i] + pad, cx[i] + pad
        face = img[
            int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))
        ]
        if face.size == 0:
            raise MetricInputError(f"empty face crop at frame {f} (box half-size {bs:.1f})")
        out[i] = cv2.resize(face, (cfg.size, cfg.size))
    return out


# ------------------------------------------------------------------------------- SyncNet scoring


@torch.no_grad()
def embed_windows(
    model: SyncNet, crops_bgr: np.ndarray, pcm16: np.ndarray, batch_size: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video and audio embeddings ``(N, 1024)`` of the reference's windows (module doc, step 4)."""
    from tqdm import tqdm

    feats = mfcc(pcm16, SAMPLE_RATE).T.astype(np.float32)  # (13, M)
    min_length = min(len(crops_bgr), len(pcm16) // SAMPLES_PER_FRAME)
    n = min_length - VIDEO_WINDOW
    if n < 1:
        raise MetricInputError(
            f"too short for SyncNet: {len(crops_bgr)} face frames, {len(pcm16) / SAMPLE_RATE:.2f} s audio "
            f"(needs {VIDEO_WINDOW + 1} frames of both)"
        )
    device = next(model.parameters()).device
    video = torch.from_numpy(np.ascontiguousarray(crops_bgr)).permute(3, 0, 1, 2)  # (3, T, H, W) uint8
    audio = torch.from_numpy(feats)
    v_out, a_out = [], []
    starts = range(0, n, batch_size)
    for i0 in tqdm(starts, desc="SyncNet", unit="batch", leave=False, disable=len(starts) < 10):
        ids = range(i0, min(n, i0 + batch_size))
        v = torch.stack([video[:, i : i + VIDEO_WINDOW] for i in ids]).float()
        a = torch.stack(
            [audio[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + AUDIO_WINDOW] for i in ids]
        ).unsqueeze(1)
        v_out.append(model.forward_lip(v.to(device)).cpu())
        a_out.append(model.forward_aud(a.to(device)).cpu())
    return torch.cat(v_out), torch.cat(a_out)


@dataclass
class ClipSync:
    """Per-clip LSE record."""

    lse_d: float
    lse_c: float
    offset: int
    n_windows: int
    track_start: int  # first frame of the scored face track
    track_frames: int
    n_faces_tracks: int
    mean_dists: tuple[float, ...] = field(repr=False, default=())


def _resample(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), SAMPLE_RATE)
    return resample_poly(audio.astype(np.float64), SAMPLE_RATE // g, int(sr) // g)


def lse_clip(
    frames_rgb: np.ndarray,
    audio: np.ndarray,
    model: SyncNet,
    detector: FaceDetector,
    cfg: LSEConfig | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> ClipSync:
    """Pure per-clip LSE: ``frames_rgb`` (T, H, W, 3) uint8 at 25 fps, ``audio`` mono float in
    [-1, 1] (or int16) at ``sample_rate``. Raises :class:`MetricInputError` when no face track."""
    cfg = cfg or LSEConfig()
    if audio is None or len(audio) == 0:
        raise MetricInputError("LSE needs audio (the ground truth's driving audio)")
    a = np.asarray(audio)
    if a.ndim != 1:
        raise MetricInputError(f"audio must be mono (n,), got shape {a.shape}")
    pcm = to_pcm16(a) if a.dtype == np.int16 else to_pcm16(_resample(a, sample_rate))
    detections = [detector(f) for f in frames_rgb]
    tracks = build_tracks(detections, cfg)
    if not tracks:
        n_det = sum(len(d) > 0 for d in detections)
        raise MetricInputError(
            f"no face track of >= {cfg.min_track} frames (faces found in {n_det}/{len(frames_rgb)} frames)"
        )
    track = max(tracks, key=lambda t: (len(t.frames), np.mean(t.boxes[:, 2] - t.boxes[:, 0])))
    crops = crop_track(frames_rgb, track, cfg)
    t0, t1 = int(track.frames[0]), int(track.frames[-1]) + 1
    seg = pcm[round(t0 / FPS * SAMPLE_RATE) : round(t1 / FPS * SAMPLE_RATE)]
    v, a_emb = embed_windows(model, crops, seg, cfg.batch_size)
    sc = sync_scores(offset_distances(v, a_emb, cfg.vshift), cfg.vshift)
    return ClipSync(sc.lse_d, sc.lse_c, sc.offset, sc.n_windows, t0, t1 - t0, len(tracks), sc.mean_dists)


# ---------------------------------------------------------------------------------- the metric


class LSE(Metric):
    """Streaming LSE-D (lower is better) and LSE-C (higher is better) over clip pairs.

    ``update(generated, ground_truth)`` scores the generated frames against the ground truth's
    audio. Construction loads SyncNet: ``weights`` path, else ``$SHV_SYNCNET_WEIGHTS``, else
    ``$SHV_WEIGHTS_DIR/syncnet_v2.model``; raises ``MissingWeightsError`` when absent. ``model``
    (a :class:`SyncNet`) and ``detector`` may be injected instead.
    """

    name = "lse"
    higher_is_better = False  # of the primary number, LSE-D; see results()

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        protocol: Protocol | str | None = None,
        config: LSEConfig | None = None,
        model: SyncNet | None = None,
        detector: FaceDetector | None = None,
        device: str = "cpu",
    ) -> None:
        proto = get_protocol(protocol) if isinstance(protocol, str) else protocol or get_protocol("shv-v1")
        self.protocol = proto
        self.config = config or LSEConfig.from_protocol(proto)
        if proto.fps != FPS or proto.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"LSE needs 25 fps / 16 kHz input, protocol {proto.name} has {proto.fps}/{proto.sample_rate}"
            )
        if model is None:
            model, path, digest = load_syncnet(weights, device)
            self.weights_path: str | None = str(path)
            self.weights_sha256: str | None = digest
        else:
            self.weights_path, self.weights_sha256 = None, None
        self.model = model.eval()
        self._detector = detector
        super().__init__()
        self.per_clip: dict[str, ClipSync]
        self.failed: dict[str, str]
        self.add_state("per_clip", {}, "union")
        self.add_state("failed", {}, "union")

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = MediapipeFaceDetector(
                self.config.detector_model, self.config.min_detection_confidence
            )
        return self._detector

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for shard workers: the MediaPipe detector is rebuilt lazily after unpickling."""
        state = dict(self.__dict__)
        if isinstance(state.get("_detector"), MediapipeFaceDetector):
            state["_detector"] = None
        return state

    def update(self, generated: Clip, ground_truth: Clip) -> None:
        """Score one pair; per-clip LSE-D/LSE-C/offset go to ``per_clip`` (two numbers, so None
        is returned). A clip without a usable face track is recorded in ``failed`` and raises."""
        gen, gt = align(generated, ground_truth, self.protocol.max_length_mismatch)
        key = gt.clip_id or f"clip{len(self.per_clip) + len(self.failed):06d}"
        if key in self.per_clip or key in self.failed:
            raise ValueError(f"lse: clip id {key!r} was already scored")
        if abs(gen.fps - FPS) > 1e-3:
            raise MetricInputError(f"{key}: LSE needs 25 fps frames, got {gen.fps}")
        if gt.audio is None or len(gt.audio) == 0:
            raise MetricInputError(f"{key}: the ground truth has no audio (LSE uses it as driving audio)")
        try:
            res = lse_clip(gen.frames, gt.audio, self.model, self.detector, self.config, gt.sample_rate)
        except MetricInputError as exc:
            self.failed[key] = str(exc)
            raise MetricInputError(f"{key}: {exc}") from exc
        self.per_clip[key] = res
        log.debug("lse %s: D %.3f C %.3f offset %d", key, res.lse_d, res.lse_c, res.offset)

    def extractor_hashes(self) -> dict[str, str]:
        """``{"syncnet_v2": sha256}`` of the loaded weights (empty for an injected model)."""
        return {"syncnet_v2": self.weights_sha256} if self.weights_sha256 else {}

    def _extras(self) -> dict[str, Any]:
        offsets = {k: v.offset for k, v in self.per_clip.items()}
        return {
            "protocol": self.protocol.name,
            "weights": "syncnet_v2.model",
            "weights_sha256": self.weights_sha256,
            "face_detector": getattr(self._detector, "name", type(self._detector).__name__)
            if self._detector is not None
            else f"mediapipe-blazeface-{'short' if self.config.detector_model == 0 else 'full'}-range",
            "config": asdict(self.config),
            "offsets": offsets,
            "mean_abs_offset": float(np.mean(np.abs(list(offsets.values())))) if offsets else None,
            "failed": dict(self.failed),
        }

    def _result(self, which: str, higher: bool) -> MetricResult:
        vals = {k: float(getattr(v, which)) for k, v in self.per_clip.items()}
        agg = float(np.mean(list(vals.values()))) if vals else None
        return MetricResult(which, agg, higher, len(vals), vals, self._extras())

    def compute(self) -> MetricResult:
        """LSE-D (the primary number); :meth:`results` gives LSE-D and LSE-C."""
        return self._result("lse_d", False)

    def results(self) -> list[MetricResult]:
        return [self._result("lse_d", False), self._result("lse_c", True)]

    def merge(self, other: Metric) -> Metric:
        self._check_merge(other)
        assert isinstance(other, LSE)
        mine = self.per_clip.keys() | self.failed.keys()
        dup = mine & (other.per_clip.keys() | other.failed.keys())
        if dup:
            raise ValueError(f"lse: shards share clip ids {sorted(dup)[:3]}")
        return super().merge(other)
