"""Crop geometry: face box fills crop_scale of the side, black padding outside the frame, policies."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from shv_toolkit.config import FaceConfig
from shv_toolkit.core import media
from shv_toolkit.stages.crop import (
    REJECT_REASON,
    CropBox,
    apply_crop,
    apply_crop_i420,
    crop_boxes,
    crop_decision,
    face_side_px,
    pad_fractions,
)
from shv_toolkit.stages.faces import FaceDetector, Track

CFG = FaceConfig()


def _track(boxes) -> Track:
    b = np.asarray(boxes, dtype=np.float64)
    n = len(b)
    return Track(0, np.arange(n), b, np.ones(n, bool), np.ones(n, bool), np.ones(n), np.zeros(n))


def test_crop_box_side_is_face_side_over_scale():
    # 640x360 frame; face box 0.2 W wide (128 px) and 0.3 H tall (108 px) -> face side 128 px
    t = _track([[0.4, 0.3, 0.6, 0.6]])
    (cx, cy, side), = crop_boxes(t, 640, 360, CFG)
    assert (cx, cy) == pytest.approx((320.0, 162.0))
    assert side == pytest.approx(128 / 0.8)
    assert face_side_px(np.array([[cx, cy, side]]), CFG)[0] == pytest.approx(128)
    # height-dominated box
    (_, _, side2), = crop_boxes(_track([[0.45, 0.1, 0.55, 0.9]]), 640, 360, replace(CFG, crop_scale=0.5))
    assert side2 == pytest.approx(0.8 * 360 / 0.5)
    with pytest.raises(ValueError):
        crop_boxes(t, 640, 360, replace(CFG, crop_scale=1.5))


def test_apply_crop_exact_pixels_inside_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    box = CropBox(300.3, 151.6, 100.0)
    assert box.rect() == (250, 102, 100)  # the even-cornered n x n square whose centre is nearest (cx, cy)
    assert CropBox(301.2, 150.9, 100.6).rect() == (252, 100, 100)  # corner 251.2 -> 252, n stays even
    assert CropBox(300.0, 150.0, 101.2).rect() == (250, 100, 102)
    out = apply_crop(frame, box, 100)  # same size: no resampling, exact copy
    np.testing.assert_array_equal(out, frame[102:202, 250:350])
    assert box.pad_fraction(640, 360) == 0.0
    big = apply_crop(frame, box, 512)
    assert big.shape == (512, 512, 3) and big.dtype == np.uint8


def test_apply_crop_pads_black_at_frame_edges():
    frame = np.full((360, 640, 3), 200, np.uint8)
    box = CropBox(0.0, 0.0, 200.0)  # centred on the top-left corner: 3/4 outside
    assert box.pad_fraction(640, 360) == pytest.approx(0.75)
    out = apply_crop(frame, box, 200)
    assert (out[:100, :] == 0).all() and (out[:, :100] == 0).all()
    assert (out[100:, 100:] == 200).all()
    assert (out == 0).all(axis=2).mean() == pytest.approx(0.75)
    # entirely outside: all black, pad fraction 1
    assert not apply_crop(frame, CropBox(-500, -500, 100), 64).any()
    assert CropBox(-500, -500, 100).pad_fraction(640, 360) == 1.0


def test_out_of_frame_policies():
    inside = np.array([[320, 180, 100], [330, 180, 100.0]])
    edge = np.array([[320, 180, 100], [20, 180, 100.0]])  # second frame: 30 of 100 columns outside
    assert pad_fractions(edge, 640, 360)[1] == pytest.approx(0.3)
    d = crop_decision(inside, 640, 360, CFG)
    assert d.ok and d.pad_fraction == 0.0 and d.reason is None
    d = crop_decision(edge, 640, 360, CFG)  # pad mode, 0.3 > max_pad_fraction 0.25
    assert not d.ok and d.reason == REJECT_REASON and d.pad_fraction == pytest.approx(0.3)
    d = crop_decision(edge, 640, 360, replace(CFG, max_pad_fraction=0.35))
    assert d.ok and d.pad_fraction == pytest.approx(0.3)
    reject = replace(CFG, out_of_frame="reject")
    assert crop_decision(inside, 640, 360, reject).ok
    slight = np.array([[49, 180, 102.0]])  # even grid: columns -2..99, two columns outside
    assert pad_fractions(slight, 640, 360)[0] == pytest.approx(2 / 102)
    assert not crop_decision(slight, 640, 360, reject).ok
    assert crop_decision(np.array([[50.5, 180, 102.0]]), 640, 360, reject).ok  # columns 0..101
    assert crop_decision(slight, 640, 360, CFG).ok


def test_face_fills_crop_scale_of_real_crop(shared_media):
    """Crop a real frame by the definition, detect again in the crop: the face box side is
    crop_scale of the crop side (same detector, so up to its small scale jitter)."""
    frame = media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", start=3.0, end=3.04)[0]
    h, w = frame.shape[:2]
    cfg = replace(CFG, crop_scale=0.5)  # room around the face so the detector sees all of it
    with FaceDetector(cfg) as det:
        (d,) = det.detect(frame)
        (box,) = crop_boxes(_track([d.box]), w, h, cfg)
        crop = apply_crop(frame, box, 256)
        (d2,) = det.detect(crop)
    side2 = max(d2.x1 - d2.x0, d2.y1 - d2.y0)
    assert side2 == pytest.approx(0.5, abs=0.05)
    assert ((d2.x0 + d2.x1) / 2, (d2.y0 + d2.y1) / 2) == pytest.approx((0.5, 0.5), abs=0.05)


def test_apply_crop_into_buffer_matches_and_checks_it():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (288, 360, 3), dtype=np.uint8)
    buf = np.zeros((2, 128, 128, 3), np.uint8)
    for box in [CropBox(180, 140, 200), CropBox(20, 20, 200), CropBox(100, 100, 128), CropBox(180, 140, 90)]:
        want = apply_crop(frame, box, 128)
        got = apply_crop(frame, box, 128, out=buf[1])
        assert np.shares_memory(got, buf) and np.array_equal(buf[1], want) and not buf[0].any()
    with pytest.raises(ValueError, match="C-contiguous"):
        apply_crop(frame, CropBox(180, 140, 200), 128, out=np.zeros((128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        apply_crop(frame, CropBox(180, 140, 200), 128, out=np.zeros((128, 256, 3), np.uint8)[:, ::2])


@pytest.fixture(scope="module")
def real_yuv_frame(shared_media):
    """One real 4:2:0 frame's own planes, as the render stage sees them."""
    for _, sf in media.iter_source_frames(shared_media / "franck.mp4", start=10.0, end=10.1):
        planes = sf.yuv420()
        assert planes is not None and sf.colorspace in media.PASS_THROUGH_MATRICES
        return tuple(p.copy() for p in planes)
    raise AssertionError("no frame")


@pytest.mark.parametrize("box", [(180, 140, 152), (181.3, 141.7, 151), (180, 140, 150), (60, 50, 220),
                                 (200, 150, 700)])
def test_apply_crop_i420_is_the_rgb_crop_without_the_round_trip(real_yuv_frame, box):
    """Luma is cut exactly as the RGB crop cuts a picture; the whole crop shows what the RGB crop of the
    same frame shows (chroma aligned: the crop grid is even); both pad black outside the
    frame, and enlarging (cubic) and shrinking (area) agree."""
    import cv2

    y, u, v = real_yuv_frame
    yuv = apply_crop_i420(real_yuv_frame, CropBox(*box), 512)
    assert yuv.shape == (768, 512) and yuv.dtype == np.uint8
    if CropBox(*box).pad_fraction(y.shape[1], y.shape[0]) == 0:  # (padding: luma 16 where RGB has 0)
        luma = apply_crop(np.dstack([y, y, y]), CropBox(*box), 512)[..., 0]  # same geometry and filter
        assert np.abs(yuv[:512].astype(int) - luma).max() <= 1  # OpenCV's 1- and 3-channel paths round apart
    frame_rgb = cv2.cvtColor(np.concatenate([y, u.reshape(-1, y.shape[1]), v.reshape(-1, y.shape[1])]),
                             cv2.COLOR_YUV2RGB_I420)
    got = media.i420_to_rgb(yuv)
    want = apply_crop(frame_rgb, CropBox(*box), 512)
    grey = np.abs(cv2.cvtColor(got, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(want, cv2.COLOR_RGB2GRAY))
    assert grey.mean() < 0.8 and np.percentile(grey, 99) <= 4
    chroma = np.abs(cv2.cvtColor(got, cv2.COLOR_RGB2YUV).astype(int) - cv2.cvtColor(want, cv2.COLOR_RGB2YUV))[..., 1:]
    assert chroma.mean() < 2.0


def test_apply_crop_i420_exact_copy_padding_and_buffer(real_yuv_frame):
    planes = real_yuv_frame
    y, u, v = planes
    # an even, same-size square inside the frame is copied sample for sample
    out = apply_crop_i420(planes, CropBox(180, 140, 128), 128)  # ox, oy = 116, 76
    assert np.array_equal(out[:128], y[76:204, 116:244])
    assert np.array_equal(out[128:160].reshape(64, 64), u[38:102, 58:122])
    assert np.array_equal(out[160:].reshape(64, 64), v[38:102, 58:122])
    # entirely outside: black
    black = apply_crop_i420(planes, CropBox(-500, -500, 100), 64)
    assert (black[:64] == 16).all() and (black[64:] == 128).all()
    # into a clip buffer, with checks
    buf = np.zeros((2, 96, 64), np.uint8)
    target = buf[1]
    assert apply_crop_i420(planes, CropBox(180, 140, 150), 64, out=target) is target
    assert np.array_equal(buf[1], apply_crop_i420(planes, CropBox(180, 140, 150), 64)) and not buf[0].any()
    with pytest.raises(ValueError, match="even"):
        apply_crop_i420(planes, CropBox(180, 140, 150), 63)
    with pytest.raises(ValueError, match="C-contiguous"):
        apply_crop_i420(planes, CropBox(180, 140, 150), 64, out=np.zeros((96, 128), np.uint8)[:, ::2])


@pytest.mark.parametrize("n", [513, 691, 1024])
def test_shrinking_is_area_averaging(real_yuv_frame, n):
    """Crops larger than the clip are area-averaged (by swscale): within one code value of OpenCV's
    INTER_AREA, on a luma plane and on an RGB picture."""
    import cv2

    from shv_toolkit.stages.crop import _resize_into

    y = np.ascontiguousarray(cv2.resize(real_yuv_frame[0], (n, n), interpolation=cv2.INTER_CUBIC))
    got = _resize_into(y, np.empty((512, 512), np.uint8))
    want = cv2.resize(y, (512, 512), interpolation=cv2.INTER_AREA)
    assert np.abs(got.astype(int) - want).max() <= 1 and np.abs(got.astype(int) - want).mean() < 0.1
    rgb = np.ascontiguousarray(np.dstack([y, y[::-1], y[:, ::-1]]))
    got = _resize_into(rgb, np.empty((512, 512, 3), np.uint8))
    want = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_AREA)
    assert np.abs(got.astype(int) - want).max() <= 1 and np.abs(got.astype(int) - want).mean() < 0.1
