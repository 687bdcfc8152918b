"""media.py: analysis downsizing and the encoder's RGB -> I420 input path, on real frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shv_toolkit.core import media


@pytest.fixture(scope="module")
def real_frames(shared_media):
    return media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", start=2.0, end=2.4)  # (10, 360, 640, 3)


@pytest.mark.parametrize("scale", [1.6, 2.0, 4.5])
def test_analysis_downsizing_is_an_area_average(real_frames, scale):
    """A frame downsized to ``max_side`` (converted and resized in one swscale pass) stays within ~1 grey
    level of OpenCV's area average of the full-size RGB frame, at the exact target size."""
    import av

    big = cv2.resize(real_frames[0], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    big = np.ascontiguousarray(big[: big.shape[0] // 2 * 2, : big.shape[1] // 2 * 2])
    frame = av.VideoFrame.from_ndarray(big, format="rgb24").reformat(format="yuv420p")
    full = media._to_rgb(frame, None)  # converted as it is
    got = media._to_rgb(frame, 320)
    ref = cv2.resize(full, (320, 180), interpolation=cv2.INTER_AREA)
    assert got.shape == (180, 320, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(float) - ref).mean() < 1.5


def test_iter_frames_max_side_size_and_content(real_frames, tmp_path):
    big = np.stack([cv2.resize(f, (1280, 720), interpolation=cv2.INTER_CUBIC) for f in real_frames])
    path = media.write_video(tmp_path / "big.mp4", big, crf=12)
    small = media.read_video(path, max_side=640)
    assert small.shape == (10, 360, 640, 3)
    # downsizing the 1280x720 copy gives back (nearly) the original 640x360 frames
    assert np.abs(small.astype(float) - real_frames).mean() < 3.0


def test_writer_rgb_to_i420_keeps_colours(real_frames, tmp_path):
    """Frames go to x264 through OpenCV's RGB -> I420 and decode back to the input colours (crf 0:
    lossless apart from 4:2:0 chroma); odd sizes, which 4:2:0 cannot hold, are refused up front."""
    frames = np.ascontiguousarray(real_frames[:, :64, :96])
    back = media.read_video(media.write_video(tmp_path / "c.mp4", frames, crf=0))
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 2.0
    # against swscale's conversion of the same frames: the same colours within rounding
    import av

    ref = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray()
                    for f in frames]).astype(int)
    ours = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420) for f in frames]).astype(int)
    assert np.abs(ours - ref).max() <= 1
    with pytest.raises(ValueError, match="even width and height"):
        media.write_video(tmp_path / "odd.mp4", np.ascontiguousarray(real_frames[:, :63, :95]))
    assert not list(tmp_path.glob("*odd*"))


@pytest.fixture(scope="module")
def av_offsets(tmp_path_factory):
    """A flash (frames 25-26, t = 1.0 s) and a click (t = 1.0 s) in sync, then the same streams remuxed
    with the audio 0.5 s late and with the video 0.5 s late (``-itsoffset``, stream copy)."""
    import subprocess

    import imageio_ffmpeg

    d = tmp_path_factory.mktemp("sync")
    frames = np.full((75, 64, 64, 3), 60, np.uint8)
    frames[25:27] = 255
    sr = 48000
    audio = np.zeros(3 * sr, np.float32)
    audio[sr:sr + 480] = 0.9
    src = media.write_video(d / "in_sync.mp4", frames, 25.0, audio=audio, sample_rate=sr)
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    out = {"in_sync": src}
    for name, late in (("audio_late", 1), ("video_late", 0)):
        args = [ff, "-v", "error", "-y"]
        for i in range(2):
            args += (["-itsoffset", "0.5"] if i == late else []) + ["-i", str(src)]
        out[name] = d / f"{name}.mp4"
        subprocess.run([*args, "-map", "0:v", "-map", "1:a", "-c", "copy", str(out[name])], check=True)
    return out


@pytest.mark.parametrize(("name", "click_after_flash"), [("in_sync", 0.0), ("audio_late", 0.5), ("video_late", -0.5)])
def test_audio_keeps_sync_with_video_when_streams_start_apart(av_offsets, name, click_after_flash):
    """Audio is read on the video's time origin, as a player plays it: a late audio track is preceded by
    silence, audio before the first video frame is cut (mono reader and the separators' stereo one)."""
    from shv_toolkit.stages.vocals import load_audio_channels

    path = av_offsets[name]
    frames = media.read_video(path)
    flash = np.argmax(frames.mean(axis=(1, 2, 3)) > 200) / 25.0
    mono = media.read_audio(path, 16000)
    stereo = load_audio_channels(path, 44100)
    for x, sr in ((mono, 16000), (np.abs(stereo).max(0), 44100)):
        click = np.argmax(np.abs(x) > 0.3) / sr
        assert click - flash == pytest.approx(click_after_flash, abs=1e-3)
    assert len(mono) / 16000 == pytest.approx(3.0 + click_after_flash, abs=0.03)  # silence added / audio cut


def test_non_square_pixels_come_out_as_displayed(real_frames, tmp_path):
    """A 640x360 picture stored anamorphically (480x360 samples, sample aspect ratio 4:3) is decoded at
    its displayed 640x360, matching the original frames, and probe reports that size."""
    import subprocess

    import imageio_ffmpeg

    src = media.write_video(tmp_path / "square.mp4", real_frames, crf=12)
    ana = tmp_path / "anamorphic.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf",
                    "scale=480:360,setsar=4/3", "-c:v", "libx264", "-crf", "12", str(ana)], check=True)
    info = media.probe(ana)
    assert (info.width, info.height) == (640, 360)
    shown = media.read_video(ana)
    assert shown.shape == real_frames.shape
    assert np.abs(shown.astype(float) - real_frames).mean() < 4.0
    # without the aspect correction the picture would be 480 wide: squeezed faces in every crop
    assert media.read_video(ana, max_side=320).shape[1:3] == (180, 320)


def _combing(frames: np.ndarray) -> float:
    """Mean distance of each line from the average of its two neighbours (high for woven fields)."""
    x = frames.astype(float)
    return float(np.abs(x[:, 1:-1] - (x[:, :-2] + x[:, 2:]) / 2).mean())


def test_interlaced_video_is_deinterlaced(shared_media, tmp_path):
    """Real motion sampled at 50 fields/s, woven into 25 interlaced frames and coded as interlaced
    H.264: decoded frames come out without combing (like the progressive frames), same count and times."""
    import av

    from tests.shv_toolkit.av_writers import write_av

    fields = media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", fps=50.0, start=2.0, end=3.0)
    woven = fields[0::2].copy()
    woven[:, 1::2] = fields[1::2][:, 1::2]  # odd lines from the next field: 20 ms later
    path = write_av(tmp_path / "interlaced.mp4", woven, np.zeros(48000, np.float32), 48000,
                    options={"preset": "ultrafast", "crf": "14", "x264-params": "interlaced=1:tff=1"})
    with av.open(str(path)) as c:
        raw = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])
        assert c.streams.video[0].codec_context.field_order  # the stream says it is interlaced
    shown = media.read_video(path)
    assert shown.shape == raw.shape == (25, 360, 640, 3)
    progressive = _combing(fields[0::2])
    assert _combing(raw) > 2 * progressive  # the decoder's frames are combed on motion
    assert _combing(shown) < 1.1 * progressive
    # display rotation survives the deinterlacer (the filter keeps the frame's side data)
    import subprocess

    import imageio_ffmpeg

    rotated = tmp_path / "interlaced_rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(path),
                    "-c", "copy", str(rotated)], check=True)
    upright = media.read_video(rotated)
    assert upright.shape == (25, 640, 360, 3)
    assert (upright == np.rot90(shown, k=1, axes=(1, 2))).all()


@pytest.mark.parametrize(("fmt", "colorspace", "color_range"), [
    ("yuv420p", None, None), ("yuv420p", "ITU709", None), ("yuv420p", None, "JPEG"),
    ("yuvj420p", None, None), ("yuv420p10le", "ITU709", None), ("yuv444p", None, None),
])
def test_rgb_conversion_honours_colour_tags(real_frames, fmt, colorspace, color_range):
    """The one-thread, kept reformatter of the decoders gives exactly the pixels of PyAV's own
    ``to_ndarray(format="rgb24")`` (which honours the frame's colour matrix and range tags)."""
    import av
    from av.video.reformatter import VideoReformatter

    rf = VideoReformatter()
    for rgb in real_frames[:3]:
        cs = getattr(av.video.reformatter.Colorspace, colorspace or "DEFAULT")
        cr = getattr(av.video.reformatter.ColorRange, color_range or "UNSPECIFIED")
        # encoded with the matrix and range the tags then declare
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format=fmt, dst_colorspace=cs, dst_color_range=cr)
        frame.colorspace, frame.color_range = cs, cr
        want = frame.to_ndarray(format="rgb24")
        got = media._to_rgb(frame, None, reformatter=rf)
        assert np.array_equal(got, want)
        assert np.abs(got.astype(int) - rgb).mean() < 4  # and it is the picture, not just the same bytes


def _tagged_frame(rgb, fmt, colorspace=None, color_range=None):
    import av

    cs = getattr(av.video.reformatter.Colorspace, colorspace or "DEFAULT")
    cr = getattr(av.video.reformatter.ColorRange, color_range or "UNSPECIFIED")
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt, dst_colorspace=cs, dst_color_range=cr)
    frame.colorspace, frame.color_range = cs, cr
    return frame


@pytest.mark.parametrize(("fmt", "colorspace", "color_range", "usable"), [
    ("yuv420p", None, None, True), ("yuv420p", "ITU709", None, True), ("yuv420p", "ITU601", "MPEG", True),
    ("yuv420p", None, "JPEG", False), ("yuvj420p", None, None, False), ("yuv420p10le", None, None, False),
    ("yuv444p", None, None, False), ("yuv420p", "BT2020", None, False),
])
def test_source_frame_hands_out_its_own_planes_only_when_they_can_be_kept(real_frames, fmt, colorspace,
                                                                          color_range, usable):
    from fractions import Fraction

    from av.video.reformatter import VideoReformatter

    frame = _tagged_frame(real_frames[0], fmt, colorspace, color_range)
    sf = media.SourceFrame(frame, Fraction(1), VideoReformatter())
    planes = sf.yuv420()
    assert (planes is not None) == usable
    if usable:
        h, w = frame.height, frame.width
        ref = frame.to_ndarray()  # (3h/2, w) I420
        assert [p.shape for p in planes] == [(h, w), (h // 2, w // 2), (h // 2, w // 2)]
        assert np.array_equal(planes[0], ref[:h])
        assert np.array_equal(planes[1].reshape(-1), ref[h:h + h // 4].reshape(-1))
        assert np.array_equal(planes[2].reshape(-1), ref[h + h // 4:].reshape(-1))
        # and the planes are the picture: back to RGB with the frame's own matrix
        back = media.i420_to_rgb(ref, sf.colorspace)
        assert np.abs(back.astype(int) - real_frames[0]).mean() < 3
    assert np.array_equal(sf.rgb(), media._to_rgb(frame, None))
    # non-square pixels need resampling: no planes
    assert media.SourceFrame(_tagged_frame(real_frames[0], "yuv420p"), Fraction(4, 3), VideoReformatter()).yuv420() is None


def test_iter_source_frames_matches_iter_frames(shared_media):
    path = shared_media / "WolfgangLanger_Pexels.mp4"
    a = list(media.iter_frames(path, start=1.0, end=1.5))
    b = [(k, sf.rgb()) for k, sf in media.iter_source_frames(path, start=1.0, end=1.5)]
    assert [k for k, _ in a] == [k for k, _ in b] == list(range(25, 38))
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


def test_i420_writer_keeps_and_tags_the_colour_matrix(real_frames, tmp_path):
    """I420 written with matrix BT.709 decodes (by any reader that honours the tag, here our own) to
    the picture it came from; read as BT.601 the colours would be visibly off."""
    rgb = np.ascontiguousarray(real_frames[:4, :288, :352])
    saturated = rgb.copy()
    saturated[:, :96, :96] = (250, 20, 20)  # colour patches where the BT.601/709 matrices differ most
    saturated[:, :96, 96:192] = (20, 230, 40)
    yuv709 = [media.rgb_to_i420(f, colorspace=1) for f in saturated]
    assert np.abs(media.i420_to_rgb(yuv709[0], 1).astype(int) - saturated[0]).mean() < 2.5
    wrong = np.abs(media.i420_to_rgb(yuv709[0], 2)[:96, :192].astype(int) - saturated[0, :96, :192]).mean()
    assert wrong > 8  # the matrix matters for these colours
    out = tmp_path / "bt709.mp4"
    with media.VideoWriter(out, 25, 352, 288, colorspace=1) as wr:
        for y in yuv709:
            wr.write_i420(y)
        with pytest.raises(ValueError, match="I420"):
            wr.write_i420(yuv709[0][:-2])
    decoded = media.read_video(out)
    assert decoded.shape == saturated.shape
    assert np.abs(decoded[:, :96, :192].astype(int) - saturated[:, :96, :192]).mean() < 4
    # RGB written by a BT.709 writer (converted with its matrix) and by a plain (BT.601) one: the same picture
    rgb709 = tmp_path / "rgb709.mp4"
    with media.VideoWriter(rgb709, 25, 352, 288, colorspace=1) as wr:
        for f in saturated:
            wr.write(f)
    plain = tmp_path / "bt601.mp4"
    media.write_video(plain, saturated)
    for path in (rgb709, plain):
        assert np.abs(media.read_video(path)[:, :96, :192].astype(int) - saturated[:, :96, :192]).mean() < 4


def test_decoder_threads_do_not_change_the_frames(shared_media):
    path = shared_media / "WolfgangLanger_Pexels.mp4"
    one = media.read_video(path, start=0.5, end=1.5, max_side=None)
    frames = [f for _, f in media.iter_frames(path, start=0.5, end=1.5, decoder_threads=1)]
    auto = [f for _, f in media.iter_frames(path, start=0.5, end=1.5, decoder_threads=0)]
    assert len(frames) == len(auto) == len(one) == 25
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(frames, auto, one, strict=True))


def test_i420_grey_stretches_limited_range_luma():
    yuv = np.full((2, 12, 8), 128, np.uint8)
    yuv[0, :8] = np.arange(64).reshape(8, 8) * 4  # luma 0..252, chroma untouched
    yuv[1, :8] = 16
    yuv[1, 0, :3] = (235, 126, 240)
    g = media.i420_grey(yuv)
    assert g.shape == (2, 8, 8) and g.dtype == np.uint8
    expect = np.clip(np.round((yuv[0, :8].astype(float) - 16) * 255 / 219), 0, 255)
    np.testing.assert_array_equal(g[0], expect)
    assert g[1, 0, :3].tolist() == [255, 128, 255] and (g[1, 1:] == 0).all()
    np.testing.assert_array_equal(media.i420_grey(yuv[0]), g[0])
    np.testing.assert_array_equal(media.i420_grey(np.stack([yuv, yuv[::-1]])), np.stack([g, g[::-1]]))
    with pytest.raises(ValueError, match="I420"):
        media.i420_grey(np.zeros((10, 8), np.uint8))


@pytest.mark.parametrize("size", [512, 66])  # unpadded planes (one copy each) and padded rows
def test_write_i420_stores_the_planes_exactly(tmp_path, size):
    rng = np.random.default_rng(size)
    yuv = np.empty((size * 3 // 2, size), np.uint8)
    yuv[:size] = rng.integers(16, 236, (size, size))
    yuv[size:] = rng.integers(16, 241, (size // 2, size))
    with media.VideoWriter(tmp_path / "x.mp4", 25, size, size, crf=0) as w:  # x264 crf 0: lossless
        w.write_i420(yuv)
        w.write_i420(yuv[::-1].copy())
    import av

    with av.open(str(tmp_path / "x.mp4")) as c:
        got = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], yuv)
    np.testing.assert_array_equal(got[1], yuv[::-1])


def test_source_frames_stay_valid_when_kept_and_convert_on_another_thread(shared_media):
    """Frames kept past later decodes convert (with another reformatter, on another thread) to the
    pixels they gave at once: the analysis converts only the frames its face detector runs on, later."""
    from concurrent.futures import ThreadPoolExecutor

    from av.video.reformatter import VideoReformatter

    path = shared_media / "WolfgangLanger_Pexels.mp4"
    now, kept = [], []
    for _, sf in media.iter_source_frames(path, start=1.0, end=1.5):
        now.append(sf.rgb(320))
        kept.append(sf)
    rf = VideoReformatter()
    with ThreadPoolExecutor(1) as pool:
        later = list(pool.map(lambda sf: sf.rgb(320, reformatter=rf), kept))
    assert len(now) == 13 and all(np.array_equal(a, b) for a, b in zip(now, later, strict=True))
    assert len({a.tobytes() for a in now}) > 1  # distinct frames, not one buffer seen 13 times


def test_small_bgr_is_the_shown_frame_downscaled(real_frames, tmp_path):
    """``small_bgr`` (one swscale pass from the decoded frame, fast bilinear) is the displayed picture:
    non-square pixels widened, display rotation applied, within a few grey levels of OpenCV's linear
    downscale of the shown RGB frame, as PySceneDetect downscales (4.8 on average on this detailed
    frame; colour channels swapped: 12.9)."""
    import subprocess

    import imageio_ffmpeg

    src = media.write_video(tmp_path / "square.mp4", real_frames, crf=12)
    ana = tmp_path / "anamorphic.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf",
                    "scale=480:360,setsar=4/3", "-c:v", "libx264", "-crf", "12", str(ana)], check=True)
    rot = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(src),
                    "-c", "copy", str(rot)], check=True)
    for path, shown_size, small in ((src, (640, 360), (256, 144)), (ana, (640, 360), (256, 144)),
                                    (rot, (360, 640), (144, 256))):
        for _, sf in media.iter_source_frames(path, end=0.2):
            assert sf.display_size == shown_size
            got = sf.small_bgr(*small)
            ref = cv2.cvtColor(cv2.resize(sf.rgb(), small, interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR)
            assert got.shape == (small[1], small[0], 3)
            near, swapped = (np.abs(got.astype(float) - r).mean() for r in (ref, ref[:, :, ::-1]))
            assert near < 6.0, path.name  # no anti-aliasing on either side: detail aliases differently
            assert near < 0.5 * swapped, path.name  # BGR, not RGB
