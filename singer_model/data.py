"""Conditioning inputs of SINGER and the per-clip training cache, from SHV Parquet manifests.

Per clip (all from local files, nothing downloaded):

* **VAE latents** of every frame resized to ``data.size`` (``AutoencoderKL`` mean latent times its
  ``scaling_factor``).
* **Audio features**: wav2vec2 (``transformers.Wav2Vec2Model`` from a local ``save_pretrained`` folder, e.g.
  ``wav2vec2-base-960h``) on the 16 kHz track (the vocals stem when the build produced one), the outputs of
  all its hidden layers (12 for base; the embedding output is not used), one vector per video frame:
  ``[T, layers, dim]``. With ``data.wav2vec_resample: before_transformer`` (default, Hallo's ``Wav2VecModel``,
  checked against it) the CNN features are linearly resampled (``align_corners=True``) to ``T`` before the
  projection and transformer; ``after_transformer`` runs the transformer at 50 Hz and resamples its outputs. :func:`window_features` then stacks ``window`` (5)
  neighbouring frames per frame (edges clamped): ``[T, window, layers, dim]`` (AudioProj input).
* **Masks** from mediapipe face-mesh landmarks of the reference (first) frame (static per clip), with
  ``data.masks: hallo`` (default) as Hallo's ``get_mask`` (checked against the release's outputs,
  ``tests/singer_model/fixtures/upstream``): hard boxes around the face-oval landmarks (``face_expand_ratio``
  1.2) and the lip landmarks (``lip_expand_ratio`` 2.0), resized to 64x64, Gaussian-blurred (51 / 31) and
  min-max normalised; ``full`` = 1 - face, ``face`` = face - lip, ``lip`` = lip. The FaceLocator input is the
  hard face box at pixel resolution (3 channels); the attention masks are area-resized from 64x64 to the
  latent size (the identity at 512 px; Hallo resizes its PNGs bilinearly for the coarser UNet levels, the
  model area-pools them). ``data.masks: boxes``: hard boxes around all landmarks / the lips, full = ones.
* **Identity embedding** of the reference frame: insightface ``FaceAnalysis`` (``embedding``, 512-d, as Hallo)
  when insightface is installed and its models are in ``weights.face_analysis``; otherwise a documented
  fallback: the grey 32x32 face crop, standardised, through a fixed Gaussian random projection (seed 0) to
  ``image_embed_dim`` and L2-normalised. The fallback is not an identity network: it is deterministic and
  varies with the face, but it is NOT compatible with published Hallo/SINGER ImageProj weights (trained on
  ArcFace embeddings), so a published checkpoint used with it loses identity conditioning quality; models
  trained with it are consistent between training and inference. The backend is part of the cache key;
  checkpoints record the one used, and inference refuses the other (insightface providers follow the device).

The cache (:class:`ClipCache`) holds one ``<clip_id>.safetensors`` per clip under ``<cache>/<config hash>/``;
the hash covers every setting and weight file that changes the cached values, so a changed config or weight
file gets a fresh directory; each file also records the clip's source file sizes/mtimes and is recomputed
when they differ. Files are written atomically (temp + rename), so an interrupted preparation resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from shv_toolkit.core.atomic import atomic_path
from shv_toolkit.core.errors import MediaError, MissingWeightsError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DataConfig:
    """Data preparation and sampling (defaults: the paper's training setup)."""

    size: int = 512  #: square frame side the model sees (pixels)
    n_frames: int = 16  #: frames per training sample / inference window
    fps: float = 25.0
    sample_rate: int = SAMPLE_RATE
    prefer_vocals: bool = True  #: audio from the vocals stem when the build produced one
    face_expand_ratio: float = 1.2  #: Hallo's face box enlargement
    lip_expand_ratio: float = 2.0  #: Hallo's lip box enlargement (get_mask's default)
    #: "hallo": Hallo's masks (blurred at 64x64; full = 1 - face, face = face - lip; :func:`hallo_masks`);
    #: "boxes": hard landmark boxes, full = ones (this project's earlier masks)
    masks: str = "hallo"
    #: "before_transformer": the wav2vec2 CNN features are resampled to the video frame rate before the
    #: transformer (Hallo's Wav2VecModel); "after_transformer": the transformer runs at 50 Hz and its hidden
    #: states are resampled (this project's earlier features)
    wav2vec_resample: str = "before_transformer"
    identity_backend: str = "auto"  #: "auto" (insightface if present, else fallback), "insightface", "fallback"

    def __post_init__(self) -> None:
        if self.masks not in MASK_SCHEMES:
            raise ValueError(f"data.masks must be one of {MASK_SCHEMES}, got {self.masks!r}")
        if self.wav2vec_resample not in WAV2VEC_RESAMPLE:
            raise ValueError(f"data.wav2vec_resample must be one of {WAV2VEC_RESAMPLE}, got {self.wav2vec_resample!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(**d)


MASK_SCHEMES = ("hallo", "boxes")
WAV2VEC_RESAMPLE = ("before_transformer", "after_transformer")


# ---------------------------------------------------------------------------------------------- audio
class AudioEncoder:
    """wav2vec2 features per video frame from a local ``transformers`` folder."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 resample: str = "before_transformer") -> None:
        if resample not in WAV2VEC_RESAMPLE:
            raise ValueError(f"resample must be one of {WAV2VEC_RESAMPLE}, got {resample!r}")
        self.resample = resample
        p = Path(path)
        if not (p / "config.json").is_file():
            raise MissingWeightsError(f"wav2vec2 (facebook/wav2vec2-base-960h folder): no config.json in {p}")
        if not any((p / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
            raise MissingWeightsError(f"wav2vec2 (facebook/wav2vec2-base-960h): no model.safetensors in {p}")
        from transformers import Wav2Vec2Model

        self.path = p
        self.device = torch.device(device)
        self.model = Wav2Vec2Model.from_pretrained(str(p)).to(self.device).eval().requires_grad_(False)
        self.layers = int(self.model.config.num_hidden_layers)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, n_frames: int) -> torch.Tensor:
        """``audio`` 16 kHz mono float -> ``[n_frames, layers, dim]`` float32 (CPU)."""
        a = np.asarray(audio, dtype=np.float32)
        if a.ndim != 1 or a.size == 0:
            raise MediaError(f"audio must be non-empty mono, got shape {a.shape}")
        a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)  # Wav2Vec2FeatureExtractor's zero-mean unit-variance
        min_len = 400  # shortest input the conv feature encoder accepts (one 25 ms frame)
        if a.size < min_len:
            a = np.pad(a, (0, min_len - a.size))
        x = torch.from_numpy(a)[None].to(self.device)
        if self.resample == "before_transformer":  # Hallo: CNN features [1, C, S] at 50 Hz -> n_frames
            def to_frames(_m: torch.nn.Module, _i: Any, cnn: torch.Tensor) -> torch.Tensor:
                return F.interpolate(cnn, size=n_frames, mode="linear", align_corners=True)

            hook = self.model.feature_extractor.register_forward_hook(to_frames)
            try:
                out = self.model(x, output_hidden_states=True)
            finally:
                hook.remove()
            return torch.stack(out.hidden_states[1:], dim=2)[0].float().cpu().contiguous()
        out = self.model(x, output_hidden_states=True)
        hs = torch.stack(out.hidden_states[1:], dim=2)[0]  # [S, layers, dim]
        feats = F.interpolate(hs.permute(1, 2, 0), size=n_frames, mode="linear", align_corners=True)
        return feats.permute(2, 0, 1).float().cpu().contiguous()


def window_features(feats: torch.Tensor, window: int) -> torch.Tensor:
    """``[T, layers, dim]`` -> ``[T, window, layers, dim]``: frames ``t - window//2 .. t + window//2``, clamped."""
    t = feats.shape[0]
    half = window // 2
    idx = (torch.arange(t)[:, None] + torch.arange(-half, window - half)[None]).clamp(0, t - 1)
    return feats[idx]


# ---------------------------------------------------------------------------------------------- masks
def _lip_ids() -> np.ndarray:
    from shv_toolkit.core.mediapipe_import import import_mediapipe

    return np.array(sorted({i for pair in import_mediapipe().solutions.face_mesh.FACEMESH_LIPS for i in pair}))


class FaceLandmarker:
    """mediapipe face mesh (model shipped in the mediapipe 0.10.21 wheel) -> ``(468, 2)`` pixel points."""

    def __init__(self) -> None:
        from shv_toolkit.stages.filters import face_mesh_model_path

        face_mesh_model_path()
        from shv_toolkit.core.mediapipe_import import import_mediapipe

        self._mesh = import_mediapipe().solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                     refine_landmarks=False, min_detection_confidence=0.3)
        self.lip_ids = _lip_ids()

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        h, w = frame.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(frame))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()


def _face_oval_ids() -> np.ndarray:
    from shv_toolkit.core.mediapipe_import import import_mediapipe

    return np.array(sorted({i for pair in import_mediapipe().solutions.face_mesh.FACEMESH_FACE_OVAL for i in pair}))


#: Hallo blurs its attention masks at 64x64 (the latent side at 512 px) with these Gaussian kernels
HALLO_MASK_SIZE = 64
HALLO_FACE_KERNEL = 51
HALLO_LIP_KERNEL = 31


def hallo_box(points: np.ndarray, height: int, width: int, ratio: float) -> tuple[int, int, int, int]:
    """``(x0, x1, y0, y1)`` of Hallo's expanded landmark box (``expand_region`` semantics): the rounded
    bounding box's centre (floor-halved) and side times ``ratio`` (floor-halved), then shifted, not clipped,
    back inside the image; Python rounding of the float ends."""
    lo, hi = np.round(points.min(0)), np.round(points.max(0))
    out: list[int] = []
    for axis, size in ((0, width), (1, height)):
        a, b = float(lo[axis]), float(hi[axis])
        mid, half = (a + b) // 2, ((b - a) * ratio) // 2
        a, b = mid - half, mid + half
        if a < 0:
            a, b = 0.0, b - a
        if b > size:
            a, b = a - (b - size), float(size)
        out += [round(a), round(b)]
    return out[0], out[1], out[2], out[3]


def _hallo_blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    small = cv2.resize(mask, (HALLO_MASK_SIZE, HALLO_MASK_SIZE))
    return cv2.normalize(cv2.GaussianBlur(small, (kernel, kernel), 0), None, 0, 255, cv2.NORM_MINMAX)


def hallo_masks(points: np.ndarray, height: int, width: int, face_expand_ratio: float = 1.2,
                lip_expand_ratio: float = 2.0, face_ids: np.ndarray | None = None,
                lip_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Hallo's masks from face-mesh landmarks (``points`` ``(468+, 2)`` pixels of an ``height x width`` image), as
    uint8 images: ``face_region`` (hard face box at image size: the FaceLocator input), and at 64x64
    ``full`` (255 - blurred face, truncated as the release's float round trip), ``face`` (blurred face minus
    blurred lips, saturating) and ``lip`` (blurred lips). Face box: the face-oval landmarks; lip box: the lip
    landmarks (for a face their box is the outer lip contour's, which Hallo uses)."""
    face_ids = _face_oval_ids() if face_ids is None else face_ids
    lip_ids = _lip_ids() if lip_ids is None else lip_ids
    boxes = {}
    for name, ids, ratio in (("face", face_ids, face_expand_ratio), ("lip", lip_ids, lip_expand_ratio)):
        x0, x1, y0, y1 = hallo_box(points[ids], height, width, ratio)
        m = np.zeros((height, width), np.uint8)
        m[y0:y1, x0:x1] = 255
        boxes[name] = m
    face_blur = _hallo_blur(boxes["face"], HALLO_FACE_KERNEL)
    lip_blur = _hallo_blur(boxes["lip"], HALLO_LIP_KERNEL)
    full = ((1.0 - face_blur / 255.0) * 255).astype(np.uint8)
    return {"face_region": boxes["face"], "full": full, "face": cv2.subtract(face_blur, lip_blur), "lip": lip_blur}


def _box_mask(points: np.ndarray, ratio: float, h: int, w: int) -> np.ndarray:
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ratio / 2, (y1 - y0) * ratio / 2
    m = np.zeros((h, w), np.float32)
    xa, xb = int(max(0, np.floor(cx - hw))), int(min(w, np.ceil(cx + hw)))
    ya, yb = int(max(0, np.floor(cy - hh))), int(min(h, np.ceil(cy + hh)))
    m[ya:yb, xa:xb] = 1.0
    return m


@dataclass
class FaceInfo:
    face_mask: np.ndarray  #: [H, W] float32 in {0, 1}
    lip_mask: np.ndarray  #: [H, W]
    box: tuple[int, int, int, int]  #: face landmark bounding box x0, y0, x1, y1 (pixels)
    points: np.ndarray | None = None  #: the face-mesh landmarks (pixels)


def face_info(frame: np.ndarray, landmarker: FaceLandmarker, cfg: DataConfig) -> FaceInfo:
    """Face and lip masks of one RGB frame (see module docstring); :class:`MediaError` without a face."""
    pts = landmarker(frame)
    if pts is None:
        raise MediaError("no face found in the reference frame (mediapipe face mesh)")
    h, w = frame.shape[:2]
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    return FaceInfo(_box_mask(pts, cfg.face_expand_ratio, h, w), _box_mask(pts[landmarker.lip_ids], cfg.lip_expand_ratio, h, w),
                    (max(0, x0), max(0, y0), min(w, x1), min(h, y1)), pts)


# ---------------------------------------------------------------------------------------------- identity
_FALLBACK_WARNED = False


def insightface_providers(device: str | torch.device) -> tuple[list[str], int]:
    """onnxruntime providers and insightface ``ctx_id`` for a torch device (CUDA first on a GPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], dev.index or 0
    return ["CPUExecutionProvider"], -1


class IdentityEmbedder:
    """Identity embedding of a face (see module docstring for the backends). ``backend`` records the one
    used ("insightface" or "fallback"); checkpoints store it and inference refuses the other. The fallback
    is announced once per process (a warning)."""

    def __init__(self, dim: int, face_analysis: str | os.PathLike | None = None, backend: str = "auto",
                 device: str | torch.device = "cpu") -> None:
        global _FALLBACK_WARNED
        self.dim = dim
        self._app = None
        want_insight = backend == "insightface" or (backend == "auto" and face_analysis
                                                    and Path(face_analysis, "models").is_dir())
        if want_insight:
            if not face_analysis or not Path(face_analysis, "models").is_dir():
                raise MissingWeightsError(f"insightface face_analysis models not found under {face_analysis}/models")
            try:
                from insightface.app import FaceAnalysis
            except ImportError as e:
                if backend == "insightface":
                    raise MissingWeightsError("identity_backend insightface needs the insightface package") from e
                log.warning("insightface not installed: using the fallback identity embedding")
            else:
                if dim != 512:
                    raise ValueError(f"insightface gives 512-d embeddings; the model expects {dim}")
                providers, ctx = insightface_providers(device)
                self._app = FaceAnalysis(name="", root=str(face_analysis), providers=providers)
                self._app.prepare(ctx_id=ctx, det_size=(640, 640))
        elif backend not in ("auto", "fallback"):
            raise ValueError(f"unknown identity backend {backend!r}")
        self.backend = "insightface" if self._app is not None else "fallback"
        if self.backend == "fallback" and not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            log.warning("identity embedding: the fallback (not ArcFace; published Hallo/SINGER ImageProj weights were "
                        "trained on insightface embeddings, so identity conditioning of a published model degrades)")
        g = torch.Generator().manual_seed(0)
        self._proj = torch.randn(32 * 32, dim, generator=g) / 32.0

    def __call__(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
        if self._app is not None:
            faces = self._app.get(np.ascontiguousarray(frame[..., ::-1]))
            if not faces:
                raise MediaError("insightface found no face in the reference frame")
            face = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
            return torch.as_tensor(np.asarray(face.embedding, np.float32))
        x0, y0, x1, y1 = box
        crop = frame[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        grey = cv2.resize(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY), (32, 32),
                          interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
        grey = (grey - grey.mean()) / (grey.std() + 1e-6)
        emb = torch.from_numpy(grey) @ self._proj
        return emb / emb.norm().clamp_min(1e-6)


# ---------------------------------------------------------------------------------------------- frames / VAE
def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T, size, size, 3)``: centre square crop, then area/cubic resize."""
    h, w = frames.shape[1:3]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = frames[:, y0:y0 + s, x0:x0 + s]
    if s == size:
        return np.ascontiguousarray(sq)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in sq])


@torch.no_grad()
def encode_frames(vae: torch.nn.Module, frames: np.ndarray, batch: int = 8) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> latents ``[T, C, H/8, W/8]`` (mean, times the VAE's scaling factor)."""
    p = next(vae.parameters())
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2)
        x = x.to(p.device, p.dtype) / 127.5 - 1.0
        out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out) * float(vae.config.scaling_factor)


@torch.no_grad()
def decode_latents(vae: torch.nn.Module, latents: torch.Tensor, batch: int = 8) -> np.ndarray:
    """Latents ``[T, C, h, w]`` -> ``(T, H, W, 3)`` uint8."""
    p = next(vae.parameters())
    out = []
    for i in range(0, latents.shape[0], batch):
        z = latents[i:i + batch].to(p.device, p.dtype) / float(vae.config.scaling_factor)
        x = vae.decode(z).sample.float().clamp(-1, 1)
        out.append(((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------- conditioning
@dataclass
class Conditioning:
    """Per-clip (or per reference image) conditioning, CPU tensors."""

    ref_latent: torch.Tensor  #: [C, h, w] latent of the reference frame
    face_emb: torch.Tensor  #: [E]
    face_region: torch.Tensor  #: [H, W] face mask at pixel resolution (FaceLocator input)
    full_mask: torch.Tensor  #: [h, w] latent resolution
    face_mask: torch.Tensor  #: [h, w]
    lip_mask: torch.Tensor  #: [h, w]


class Preprocessor:
    """Everything that turns pixels and audio into model inputs (VAE, wav2vec2, landmarks, identity)."""

    def __init__(self, cfg: DataConfig, vae: torch.nn.Module, audio: AudioEncoder, identity: IdentityEmbedder) -> None:
        self.cfg = cfg
        self.vae = vae
        self.audio = audio
        self.identity = identity
        self._landmarker: FaceLandmarker | None = None

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        return self._landmarker

    def reference(self, image: np.ndarray) -> Conditioning:
        """Conditioning from one RGB uint8 reference image (any size; centre-cropped and resized)."""
        img = resize_frames(np.asarray(image)[None], self.cfg.size)[0]
        info = face_info(img, self.landmarker, self.cfg)
        ref = encode_frames(self.vae, img[None])[0]
        h, w = ref.shape[-2:]

        def small(m: np.ndarray) -> torch.Tensor:
            return F.adaptive_avg_pool2d(torch.from_numpy(m)[None, None], (h, w))[0, 0]

        emb = self.identity(img, info.box).float()
        if self.cfg.masks == "boxes":
            return Conditioning(ref, emb, torch.from_numpy(info.face_mask), torch.ones(h, w), small(info.face_mask),
                                small(info.lip_mask))
        hm = {k: v.astype(np.float32) / 255.0 for k, v in
              hallo_masks(info.points, img.shape[0], img.shape[1], self.cfg.face_expand_ratio,
                          self.cfg.lip_expand_ratio).items()}
        return Conditioning(ref, emb, torch.from_numpy(hm["face_region"]), small(hm["full"]), small(hm["face"]),
                            small(hm["lip"]))

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None


# ---------------------------------------------------------------------------------------------- cache
def _file_sig(path: str | os.PathLike | None) -> list[Any]:
    """Size and mtime of a file, or of every file under a folder (weights), for cache keys."""
    if not path:
        return []
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return [[q.name, q.stat().st_size, int(q.stat().st_mtime)] for q in files if q.exists()]


def cache_key(cfg: DataConfig, vae_path: str | None, wav2vec_path: str | None, identity_backend: str,
              model_dims: dict[str, Any]) -> str:
    blob = json.dumps({"data": asdict(cfg), "vae": _file_sig(vae_path), "wav2vec2": _file_sig(wav2vec_path),
                       "identity": identity_backend, "model": model_dims}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ClipCache:
    """``<root>/<key>/<clip_id>.safetensors`` holding a clip's latents, audio features, masks, embedding."""

    FIELDS = ("latents", "audio", "ref_latent", "face_emb", "face_region", "full_mask", "face_mask", "lip_mask")

    def __init__(self, root: str | os.PathLike, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key

    def path(self, clip_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in clip_id)
        return self.dir / f"{safe}.safetensors"

    def get(self, clip_id: str, sources: list[Any]) -> dict[str, torch.Tensor] | None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        p = self.path(clip_id)
        if not p.is_file():
            return None
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("sources") != json.dumps(sources) or meta.get("key") != self.key:
            log.info("cache entry of %s is stale: recomputing", clip_id)
            return None
        return load_file(str(p))

    def put(self, clip_id: str, sources: list[Any], tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.path(clip_id)) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"sources": json.dumps(sources), "key": self.key, "clip_id": clip_id})


def prepare_clip(pre: Preprocessor, frames: np.ndarray, audio: np.ndarray) -> dict[str, torch.Tensor]:
    """Cache entry of one clip: frames (T, H, W, 3) uint8, 16 kHz audio covering them."""
    frames = resize_frames(frames, pre.cfg.size)
    cond = pre.reference(frames[0])
    latents = encode_frames(pre.vae, frames)
    feats = pre.audio(audio, len(frames))
    return {"latents": latents, "audio": feats, "ref_latent": cond.ref_latent, "face_emb": cond.face_emb,
            "face_region": cond.face_region, "full_mask": cond.full_mask, "face_mask": cond.face_mask,
            "lip_mask": cond.lip_mask}


def build_cache(manifest: str | os.PathLike, pre: Preprocessor, cache: ClipCache, progress: bool = True
                ) -> list[str]:
    """Prepare every kept clip of ``manifest`` not yet cached (resumable); returns the clip ids."""
    from tqdm import tqdm

    from shv_toolkit.dataset import SHVDataset

    ds = SHVDataset(manifest, frames="uint8", prefer_vocals=pre.cfg.prefer_vocals, sample_rate=pre.cfg.sample_rate)
    ids = []
    for row in tqdm(ds.rows, desc="prepare clips", unit="clip", disable=not progress):
        cid = str(row["clip_id"])
        sources = [_file_sig(ds._path(row[k])) for k in ("video_path", "audio_path", "vocals_path") if row.get(k)]
        if cache.get(cid, sources) is None:
            frames = ds.load_frames(row)
            audio, _src, _path = ds.load_audio(row)
            cache.put(cid, sources, prepare_clip(pre, frames, audio))
        ids.append(cid)
    if not ids:
        raise MediaError(f"{manifest}: no kept clips")
    return ids
