"""Typed configuration of shv-build. One :class:`BuildConfig` per run, hashed into every manifest row.

Every default is documented next to its field. A YAML file (``--config``) may override any field
using the same nesting, e.g.::

    faces:
      crop_scale: 0.8
    filters:
      min_sharpness: 40
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shv_toolkit.core.errors import UsageError


@dataclass
class DownloadConfig:
    retries: int = 3  # yt-dlp retries per request/fragment
    socket_timeout: float = 30.0  # seconds per network operation
    max_filesize_mb: float = 2048.0  # larger downloads are refused (also applied to local files)
    max_duration_s: float = 4 * 3600.0  # longer sources are refused
    format: str = "bv*[height<=1080]+ba/b[height<=1080]/bv*+ba/b"  # yt-dlp format selector
    # yt-dlp format sort fields put before its defaults (-S). yt-dlp's own default ("hdr:12") prefers
    # HDR formats, and shv-build does not tone-map, so SDR is preferred: "hdr:sdr".
    format_sort: list[str] = field(default_factory=lambda: ["hdr:sdr"])
    # HDR sources (PQ or HLG transfer): "reject" (their colours would come out wrong: no tone mapping)
    # or "keep" (cut as they are; the sources table records the transfer).
    hdr: Literal["reject", "keep"] = "reject"
    cookies: str | None = None  # Netscape cookies file (--cookies)
    cookies_from_browser: str | None = None  # e.g. "firefox" or "chrome:Profile 1" (--cookies-from-browser)
    rate_limit: str | None = None  # e.g. "2M" bytes/s (--limit-rate)
    sleep_interval: float = 0.0  # seconds to sleep before each download (--sleep-interval)
    max_sleep_interval: float | None = None  # random sleep in [sleep_interval, this]


@dataclass
class SceneConfig:
    detector: Literal["content", "adaptive", "threshold", "hash", "histogram"] = "content"
    threshold: float | None = None  # None: the detector's own default (content: 27.0)
    min_scene_len_frames: int = 15  # PySceneDetect min_scene_len, at 25 fps
    analysis_max_side: int = 640  # frames are downsized to this for scene and face analysis


@dataclass
class FaceConfig:
    # mediapipe BlazeFace model: 0 short range (head shots; faster, perf/RESULTS.md), 1 full range
    model_selection: int = 0
    # model run where model_selection finds no face (None: never); full range finds smaller faces
    fallback_model_selection: int | None = 1
    min_detection_confidence: float = 0.5
    # finest detection stride: every N-th grid frame (and the last); boxes interpolated in between
    detect_stride: int = 3
    # keyframes every detect_stride x keyframe_multiple frames; the frames between two keyframes whose
    # faces disagree (count, or IoU < keyframe_agree_iou) are detected at detect_stride. Accuracy:
    # perf/RESULTS.md (face stride)
    keyframe_multiple: int = 2
    keyframe_agree_iou: float = 0.5
    iou_threshold: float = 0.3  # IoU linking detections into a track
    # a track survives this many frames without a detection once the detector missed it on an analysed
    # frame (frames the detector skipped between agreeing keyframes never close a track)
    max_gap_frames: int = 5
    smooth_window: int = 25  # median filter window (frames) for box centre and size
    crop_scale: float = 0.8  # face box side / crop side (the SINGER paper's 0.8)
    out_of_frame: Literal["pad", "reject"] = "pad"  # crops that leave the frame: pad black or reject
    max_pad_fraction: float = 0.25  # with "pad": reject when more than this share of the crop is padding


@dataclass
class ClipConfig:
    fps: float = 25.0
    clip_seconds: float = 2.0  # 50 frames at 25 fps
    size: int = 512  # output side in pixels (square)
    crf: int = 18  # x264 quality
    preset: str = "veryfast"
    sample_rate: int = 16000  # wav beside each clip (mono)
    mp4_audio_rate: int = 16000  # AAC track of the mp4
    # helper threads per task (scoring, encoding, face detection beside decoding); None: the engine's
    # cores per task in [1, 8]; 0: one thread. Output is byte-identical for every value (not hashed).
    threads: int | None = None
    # FFmpeg threads of the render decode; None: 1 when the helpers fill the task's cores, else 0
    # (FFmpeg's choice). Not hashed (decoding is exact either way). See shv_toolkit.build.units.TaskThreads.
    decoder_threads: int | None = None


@dataclass
class VocalsConfig:
    backend: Literal["auto", "demucs", "spleeter", "mdx", "none"] = "auto"
    demucs_model_dir: str | None = None  # local directory with a demucs model (yaml + .th); never downloaded
    demucs_model_name: str = "htdemucs"
    demucs_shifts: int = 1  # demucs test-time random-shift passes averaged (0 = fastest, 1 = demucs default)
    # "mdx": local MDX-Net ONNX file, Hallo's pretrained_models/audio_separator/Kim_Vocal_2.onnx (never downloaded)
    mdx_model_path: str | None = None
    device: str = "cpu"


@dataclass
class FilterConfig:
    """Quality filter thresholds (pipeline step 7, shv_toolkit.stages.filters).

    Every threshold may be set to ``None`` to disable its filter. Defaults were calibrated on the real
    face videos in ../shared/media (all of their clips pass) and on degraded copies of them (blurred,
    darkened, frozen, letterboxed, silent: each fails on its own filter); see manifests/SCHEMA.md.
    """

    mode: Literal["filter", "score-only"] = "filter"  # "score-only": keep every clip, still score
    min_face_presence: float | None = 0.95  # share of frames with the tracked face detected
    max_other_face_ratio: float | None = 0.5  # p95 of second face area / main face area (dominance)
    min_face_size_px: float | None = 96.0  # median face box side in source pixels
    min_luminance: float | None = 40.0  # mean grey level (0..255) of the face region
    max_luminance: float | None = 220.0
    max_border_fraction: float | None = 0.25  # black bar (letterbox/pillarbox/padding) share of the crop;
    # 0.25 = FaceConfig.max_pad_fraction, so a crop the face stage accepts is not dropped for its padding
    min_sharpness: float | None = 15.0  # variance of Laplacian of the grey face region at source resolution
    min_motion: float | None = 0.15  # mean abs frame difference (128x128 grey, 0..255): below = frozen
    max_static_frame_share: float | None = 0.6  # near-identical consecutive pairs (12.5 fps source: 0.5)
    max_abs_yaw_deg: float | None = 45.0  # median |yaw| from face-mesh landmarks
    max_abs_pitch_deg: float | None = 35.0  # median |pitch|
    min_loudness_db: float | None = -45.0  # RMS dBFS of the vocals stem (of the mix without one)
    min_vocal_activity: float | None = 0.3  # share of 20 ms frames with voice-band energy
    # a source fails when more than this share of its duration lies in damaged video or audio packets
    # (decoders refused them; a video packet counts up to the next keyframe); clips overlapping damage
    # are dropped as damaged_stream in any case
    max_damaged_share: float | None = 0.5
    # --- how the scores are measured (not thresholds)
    sample_stride: int = 5  # sharpness, luminance and borders use every 5th frame (10 of 50)
    pose_stride: int = 10  # head pose on frames 0, 10, ..., 40; accuracy in perf/RESULTS.md (pose stride)
    face_region_fraction: float = 0.6  # central share of the crop side used as the face region
    border_black_level: float = 24.0  # grey level at or below which a bar pixel counts as black
    static_frame_diff: float = 0.02  # mean abs difference (128x128 grey) at or below which frames are "same"
    vad_floor_db: float = -50.0  # absolute floor of the vocal activity threshold (voice band, dBFS)
    vad_relative_db: float = 30.0  # activity threshold = max(floor, 95th percentile level - this)


@dataclass
class SplitConfig:
    """Source-level train/test split (pipeline step 8, shv_toolkit.manifest.split)."""

    seed: int = 0  # mixed into the per-source hash; change it for a different split
    test_fraction: float = 0.2  # 4:1 train/test, decided per source
    # "rank": exactly round_half_up(test_fraction * n) test sources (those with the smallest hash), so
    # small sets get the 4:1 ratio (5 sources -> 1 test); "threshold": test iff hash < test_fraction,
    # which keeps every source's split when sources are added but can deviate far from 4:1 on few sources.
    mode: Literal["rank", "threshold"] = "rank"


@dataclass
class BuildConfig:
    download: DownloadConfig = field(default_factory=DownloadConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    vocals: VocalsConfig = field(default_factory=VocalsConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that changes the output (not of network/cookie settings)."""
        d = self.to_dict()
        for k in ("retries", "socket_timeout", "cookies", "cookies_from_browser", "rate_limit",
                  "sleep_interval", "max_sleep_interval"):
            d["download"].pop(k, None)
        d["vocals"].pop("device", None)
        if d["vocals"].get("mdx_model_path") is None:  # unset: the hashes of configs from before the field
            d["vocals"].pop("mdx_model_path", None)
        d["clips"].pop("threads", None)
        d["clips"].pop("decoder_threads", None)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildConfig:
        cfg = cls()
        for section, values in (data or {}).items():
            if not hasattr(cfg, section):
                raise UsageError(f"unknown config section {section!r}")
            sub = getattr(cfg, section)
            if not isinstance(values, dict):
                raise UsageError(f"config section {section!r} must be a mapping")
            names = {f.name for f in dataclasses.fields(sub)}
            for k, v in values.items():
                if k not in names:
                    raise UsageError(f"unknown config key {section}.{k}")
                setattr(sub, k, v)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`UsageError` for values that would otherwise fail deep inside a build."""
        problems = []
        size = self.clips.size
        if not isinstance(size, int) or size < 16 or size % 2:
            problems.append(f"clips.size must be an even integer >= 16 (H.264 4:2:0), got {size!r}")
        if not self.clips.fps or self.clips.fps <= 0 or self.clips.clip_seconds * self.clips.fps < 1:
            problems.append(f"clips.fps and clips.clip_seconds must give at least one frame, got "
                            f"{self.clips.fps!r} fps x {self.clips.clip_seconds!r} s")
        if not isinstance(self.faces.detect_stride, int) or self.faces.detect_stride < 1:
            problems.append(f"faces.detect_stride must be an integer >= 1, got {self.faces.detect_stride!r}")
        km = self.faces.keyframe_multiple
        if not isinstance(km, int) or isinstance(km, bool) or km < 1:
            problems.append(f"faces.keyframe_multiple must be an integer >= 1, got {km!r}")
        if not 0 < self.faces.keyframe_agree_iou <= 1:
            problems.append(f"faces.keyframe_agree_iou must be in (0, 1], got {self.faces.keyframe_agree_iou!r}")
        for name in ("sample_stride", "pose_stride"):
            v = getattr(self.filters, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"filters.{name} must be an integer >= 1, got {v!r}")
        if self.download.hdr not in ("reject", "keep"):
            problems.append(f"download.hdr must be 'reject' or 'keep', got {self.download.hdr!r}")
        if not isinstance(self.download.format_sort, (list, tuple)) or not all(
                isinstance(x, str) for x in self.download.format_sort):
            problems.append(f"download.format_sort must be a list of yt-dlp sort fields, got "
                            f"{self.download.format_sort!r}")
        threads = self.clips.threads
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 0):
            problems.append(f"clips.threads must be null (auto) or an integer >= 0, got {threads!r}")
        dthreads = self.clips.decoder_threads
        if dthreads is not None and (not isinstance(dthreads, int) or isinstance(dthreads, bool) or dthreads < 0):
            problems.append(f"clips.decoder_threads must be null (auto) or an integer >= 0, got {dthreads!r}")
        share = self.filters.max_damaged_share
        if share is not None and not 0 <= share <= 1:
            problems.append(f"filters.max_damaged_share must be null or in [0, 1], got {share!r}")
        if not 0 < self.faces.crop_scale <= 1:
            problems.append(f"faces.crop_scale must be in (0, 1], got {self.faces.crop_scale!r}")
        if problems:
            raise UsageError("; ".join(problems))

    @classmethod
    def from_yaml(cls, path: str | Path) -> BuildConfig:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}") from exc
        return cls.from_dict(data or {})
