"""analysis.py: one decode feeds scene cutting and face detection, inline or on a helper thread."""

from __future__ import annotations

import threading

import pytest

from shv_toolkit import media
from shv_toolkit.config import FaceConfig, SceneConfig
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
    # every 3rd frame and the last one; a face on each
    assert sorted(helped.detections) == [*range(0, 75, 3), 74]
    assert all(len(d) == 1 for d in helped.detections.values())


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
