"""analysis.py: one decode feeds scene cutting and face detection, inline or on a helper thread."""

from __future__ import annotations

import threading

from shv_toolkit import media
from shv_toolkit.config import FaceConfig, SceneConfig
from shv_toolkit.stages import analysis as analysis_mod
from shv_toolkit.stages.analysis import analyse_source


def test_helper_thread_gives_the_same_analysis(shared_media, tmp_path, monkeypatch):
    frames = media.read_video(shared_media / "franck.mp4", start=20.0, end=23.0)
    path = media.write_video(tmp_path / "franck3s.mp4", frames)
    inline = analyse_source(path, SceneConfig(), FaceConfig(), progress=False)

    threads_seen: set[str] = set()
    real_detect = analysis_mod.FaceDetector.detect

    def detect(self, frame):
        threads_seen.add(threading.current_thread().name)
        return real_detect(self, frame)

    monkeypatch.setattr(analysis_mod.FaceDetector, "detect", detect)
    helped = analyse_source(path, SceneConfig(), FaceConfig(), progress=False, threads=2)
    assert all(name.startswith("shv-faces") for name in threads_seen) and threads_seen
    assert helped.n_frames == inline.n_frames == 75
    assert helped.scenes == inline.scenes
    assert helped.detections == inline.detections
    # every 3rd frame and the last one; a face on each
    assert sorted(helped.detections) == [*range(0, 75, 3), 74]
    assert all(len(d) == 1 for d in helped.detections.values())
