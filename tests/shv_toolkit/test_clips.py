"""Clip planning and rendering on a real 4.4 s singing source (franck.mp4 frames + lena.wav voice)."""

from __future__ import annotations

import threading
from dataclasses import replace

import cv2
import numpy as np
import pytest
import soundfile as sf

from shv_toolkit.config import ClipConfig, FaceConfig, SceneConfig
from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError
from shv_toolkit.stages import clips as clips_mod
from shv_toolkit.stages.analysis import analyse_source
from shv_toolkit.stages.clips import (
    clip_frames,
    clip_id_for,
    plan_clips,
    plan_source,
    render_segment,
    verify_clip,
)
from shv_toolkit.stages.crop import crop_boxes
from shv_toolkit.stages.faces import FaceDetector, smooth_track, track_faces

FCFG, CCFG = FaceConfig(), ClipConfig()


@pytest.fixture(scope="module")
def source(shared_media, tmp_path_factory):
    """A real face video (franck.mp4 20-24.4 s) muxed with a real singing voice (lena.wav)."""
    frames = media.read_video(shared_media / "franck.mp4", start=20.0, end=24.4)
    voice = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[: 16000 * 44 // 10]
    path = tmp_path_factory.mktemp("src") / "franck singing.mp4"
    media.write_video(path, frames, audio=voice)
    analysis = analyse_source(path, SceneConfig(), FCFG, progress=False)
    return path, analysis, media.read_audio(path, sample_rate=16000)


@pytest.fixture(scope="module")
def plan(source):
    _, analysis, _ = source
    return plan_source(analysis, "src0", FCFG, CCFG)


def count_crops(mp: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the render stage's crops cut from planes ("i420") and through RGB ("rgb")."""
    cuts = {"i420": 0, "rgb": 0}

    def counted(name, fn):
        def call(*a, **k):
            cuts[name] += 1
            return fn(*a, **k)
        return call

    mp.setattr(clips_mod, "apply_crop_i420", counted("i420", clips_mod.apply_crop_i420))
    mp.setattr(clips_mod, "apply_crop", counted("rgb", clips_mod.apply_crop))
    return cuts


@pytest.fixture(scope="module")
def rendered(source, plan, tmp_path_factory, monkeypatch_module):
    path, _, audio = source
    vocals = (0.5 * audio).astype(np.float32)
    calls = []
    real_iter = media.iter_source_frames

    def counting(*a, **k):
        calls.append((a, k))
        return real_iter(*a, **k)

    monkeypatch_module.setattr(clips_mod.media, "iter_source_frames", counting)
    cuts = count_crops(monkeypatch_module)
    seen = {}

    def on_clip(spec, frames, a, v):
        rgb = np.asarray(frames)
        seen[spec.clip_id] = (rgb, a.copy(), v.copy(), frames.grey.copy(), frames[7], len(frames))
        return {"keep": True, "mean_level": float(rgb.mean())}

    out = tmp_path_factory.mktemp("clips")
    files = render_segment(path, plan.specs, out, CCFG, audio, vocals, on_clip=on_clip)
    monkeypatch_module.undo()
    calls.append(cuts)
    return out, files, seen, calls, audio, vocals


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_plan(source, plan):
    _, analysis, _ = source
    assert analysis.n_frames == 110 and len(analysis.scenes) == 1
    assert [si for si, _ in plan.kept_scenes] == [0] and plan.dropped_scenes == []
    assert len(plan.tracks[0]) == 1 and len(plan.tracks[0][0]) == 110
    specs = plan.specs
    assert [(s.start_frame, s.end_frame) for s in specs] == [(0, 50), (50, 100)]  # remainder unused
    for s in specs:
        assert s.boxes.shape == (50, 3) and s.detected.shape == (50,) and s.detected.all()
        assert s.face_side_px.shape == (50,) and (s.face_side_px > 100).all()
        np.testing.assert_allclose(s.face_side_px, s.boxes[:, 2] * FCFG.crop_scale)
        assert s.other_face_ratio.shape == (50,) and (s.other_face_ratio == 0).all()
        assert s.crop_ok and 0.0 <= s.pad_fraction <= FCFG.max_pad_fraction
    assert specs[0].clip_id == clip_id_for("src0", 0, 0, 50) != specs[1].clip_id
    # deterministic: planning again gives identical ids and boxes
    again = plan_source(analysis, "src0", FCFG, CCFG)
    assert [s.clip_id for s in again.specs] == [s.clip_id for s in specs]
    np.testing.assert_array_equal(again.specs[1].boxes, specs[1].boxes)
    assert clip_id_for("src1", 0, 0, 50) != specs[0].clip_id


def test_plan_clips_reject_policy(source):
    _, analysis, _ = source
    cfg = replace(FCFG, crop_scale=0.3)  # crop 3.3x the face: leaves the 360x288 frame
    track = smooth_track(track_faces(analysis.detections, analysis.scenes[0], cfg)[0], cfg)
    boxes = crop_boxes(track, analysis.source_width, analysis.source_height, cfg)
    kw = dict(frame_w=analysis.source_width, frame_h=analysis.source_height)
    pad = plan_clips("s", 0, 0, track, boxes, CCFG, face_cfg=replace(cfg, max_pad_fraction=0.9), **kw)
    assert all(s.crop_ok and s.pad_fraction > 0.1 for s in pad)
    rej = plan_clips("s", 0, 0, track, boxes, CCFG, face_cfg=replace(cfg, out_of_frame="reject"), **kw)
    assert all(not s.crop_ok and s.crop_reason == "crop_out_of_frame" for s in rej)


def test_render_writes_verified_clips(rendered, plan):
    out, files, seen, calls, audio, vocals = rendered
    *decodes, cuts = calls
    assert len(decodes) == 1  # the two adjacent clips came from one decode
    assert cuts == {"i420": 100, "rgb": 0}  # a yuv420p source: every crop cut from its own planes
    assert [f.clip_id for f in files] == [s.clip_id for s in plan.specs]
    for spec, f in zip(plan.specs, files, strict=True):
        assert f.video_path == f"{spec.clip_id}.mp4" and f.audio_path == f"{spec.clip_id}.wav"
        assert f.vocals_path == f"{spec.clip_id}.vocals.wav"
        info = media.probe(out / f.video_path)
        assert (info.n_frames, info.fps, info.width, info.height) == (50, 25.0, 512, 512)
        assert abs(info.duration - 2.0) <= 0.04 and info.has_audio and info.video_codec == "h264"
        wav, sr = sf.read(out / f.audio_path, dtype="float32")
        assert sr == 16000 and wav.shape == (32000,)
        i0 = spec.start_frame * 640
        np.testing.assert_allclose(wav, audio[i0:i0 + 32000], atol=1e-4)
        voc, _ = sf.read(out / f.vocals_path, dtype="float32")
        np.testing.assert_allclose(voc, vocals[i0:i0 + 32000], atol=1e-4)
        # on_clip saw the frames that were encoded, and its dict travels in ClipFiles.extra
        frames, a, v, grey, frame7, n = seen[spec.clip_id]
        assert frames.shape == (50, 512, 512, 3) and frames.dtype == np.uint8 and n == 50
        np.testing.assert_array_equal(frame7, frames[7])  # one frame on access = the same pixels
        # grey levels from the luma plane: OpenCV's RGB2GRAY of the same crops, but for rounding (and
        # for colours the RGB conversion clips)
        diff = grey.astype(int) - np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        assert grey.shape == (50, 512, 512) and abs(diff.mean()) < 0.1
        assert np.mean(np.abs(diff) > 1) < 1e-3, np.abs(diff).max()
        assert f.extra == {"keep": True, "mean_level": pytest.approx(float(frames.mean()))}
        decoded = media.read_video(out / f.video_path)
        assert decoded.shape == frames.shape
        mse = np.mean((decoded.astype(float) - frames.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35  # crf 18 encode of the same crops
        np.testing.assert_array_equal(a, audio[i0:i0 + 32000])
        # the face fills ~crop_scale of the clip frame, centred
        with FaceDetector(FCFG) as det:
            (d,) = det.detect(decoded[25])
        assert ((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2) == pytest.approx((0.5, 0.5), abs=0.08)
        assert max(d.x1 - d.x0, d.y1 - d.y0) == pytest.approx(0.8, abs=0.12)
    assert not list(out.glob(".*partial*"))


def test_render_is_byte_identical_on_clip_threads(rendered, source, plan, tmp_path):
    """The fixture rendered in the calling thread; two clip threads give the same bytes, and the
    clips really are finished two at a time: the first on a helper thread, the last by the calling
    thread itself once it has nothing left to decode."""
    out, files, *_ , audio, vocals = rendered
    path = source[0]
    assert len(plan.specs) == 2
    started = {s.clip_id: threading.Event() for s in plan.specs}
    seen_threads = {}

    def on_clip(spec, frames, a, v):
        seen_threads[spec.clip_id] = threading.current_thread().name
        started[spec.clip_id].set()
        # each clip waits (bounded) for the other one to start: only true concurrency passes
        other = next(e for cid, e in started.items() if cid != spec.clip_id)
        return {"both_running": other.wait(timeout=30)}

    files2 = render_segment(path, plan.specs, tmp_path, CCFG, audio, vocals, on_clip=on_clip, threads=2)
    for f1, f2 in zip(files, files2, strict=True):
        for attr in ("video_path", "audio_path", "vocals_path"):
            assert (out / getattr(f1, attr)).read_bytes() == (tmp_path / getattr(f2, attr)).read_bytes()
        assert f2.extra == {"both_running": True}
    first, last = (seen_threads[s.clip_id] for s in plan.specs)
    assert first.startswith("shv-clip") and last == threading.current_thread().name, seen_threads


def test_render_thread_error_propagates_and_leaves_no_partial_file(source, plan, tmp_path):
    path, _, audio = source

    def on_clip(spec, frames, a, v):
        if spec.clip_id == plan.specs[1].clip_id:
            raise MediaError("scoring failed on purpose")
        return {"keep": True}

    with pytest.raises(MediaError, match="on purpose"):
        render_segment(path, plan.specs, tmp_path, CCFG, audio, on_clip=on_clip, threads=2)
    assert not list(tmp_path.glob(".*partial*"))
    assert not (tmp_path / f"{plan.specs[1].clip_id}.mp4").exists()
    with pytest.raises(ValueError, match="threads"):
        render_segment(path, plan.specs, tmp_path, CCFG, audio, threads=-1)


def test_render_skips_rejected_and_no_audio(source, plan, tmp_path):
    path, _, _ = source
    spec = plan.specs[1]
    (f,) = render_segment(path, [spec], tmp_path / "a", CCFG, None, None,
                          on_clip=lambda *a: {"keep": False, "drop_reason": "test"}, write_rejected=False)
    assert f.video_path is None and f.audio_path is None and f.extra["drop_reason"] == "test"
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    (f,) = render_segment(path, [spec], tmp_path / "b", CCFG, None, None)
    info = media.probe(tmp_path / "b" / f.video_path)
    assert info.n_frames == 50 and not info.has_audio and f.audio_path is None


def test_verify_clip_rejects_wrong_clips(tmp_path):
    frames = np.zeros((49, 512, 512, 3), np.uint8)
    media.write_video(tmp_path / "short.mp4", frames)
    with pytest.raises(MediaError, match="49 frames"):
        verify_clip(tmp_path / "short.mp4", CCFG)
    media.write_video(tmp_path / "small.mp4", np.zeros((50, 256, 256, 3), np.uint8))
    with pytest.raises(MediaError, match="size 256x256"):
        verify_clip(tmp_path / "small.mp4", CCFG)
    assert clip_frames(CCFG) == 50


def test_render_fails_past_the_end(source, plan, tmp_path):
    path, _, audio = source
    late = replace(plan.specs[0], clip_id="late", start_frame=100, end_frame=150)
    with pytest.raises(MediaError, match="decoding ended"):
        render_segment(path, [late], tmp_path, CCFG, audio)


@pytest.mark.parametrize(("args", "path_used"), [
    (["-pix_fmt", "yuv420p", "-vf", "scale=out_color_matrix=bt709", "-colorspace", "bt709"], "i420"),
    (["-pix_fmt", "yuv444p"], "rgb"),
    (["-pix_fmt", "yuvj420p"], "rgb"),
])
def test_render_other_pixel_formats(source, plan, rendered, tmp_path, args, path_used):
    """A BT.709 source keeps its own planes (and the clip is tagged BT.709); 4:4:4 and full-range
    sources go through RGB. Either way the clip shows what the BT.601 yuv420p source's clip shows."""
    import subprocess

    import imageio_ffmpeg

    path = source[0]
    other = tmp_path / "other.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(path), *args,
                    "-c:v", "libx264", "-crf", "10", "-c:a", "copy", str(other)], check=True)
    seen = {}

    def on_clip(spec, frames, a, v):
        seen["frames"] = np.asarray(frames)

    with pytest.MonkeyPatch.context() as mp:
        cuts = count_crops(mp)
        (f,) = render_segment(other, plan.specs[:1], tmp_path / "out", CCFG, None, on_clip=on_clip)
    assert cuts[path_used] == 50 and sum(cuts.values()) == 50
    decoded = media.read_video(tmp_path / "out" / f.video_path)
    reference = media.read_video(rendered[0] / f"{plan.specs[0].clip_id}.mp4")  # from the yuv420p source
    for frames in (decoded, seen["frames"]):
        mse = np.mean((frames.astype(float) - reference.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 33
