"""media.py: analysis downsizing and the encoder's RGB -> I420 input path, on real frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shv_toolkit import media


@pytest.fixture(scope="module")
def real_frames(shared_media):
    return media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", start=2.0, end=2.4)  # (10, 360, 640, 3)


@pytest.mark.parametrize("scale", [1.6, 2.0, 4.5])
def test_shrink_matches_area_average(real_frames, scale):
    """The analysis shrink (2x box halvings, then bilinear) stays within ~1 grey level of OpenCV's
    area average at every downscale factor, and gives the exact target size."""
    big = cv2.resize(real_frames[0], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    w, h = 320, 180
    got = media._shrink(big, w, h)
    ref = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    assert got.shape == (h, w, 3) and got.dtype == np.uint8
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
