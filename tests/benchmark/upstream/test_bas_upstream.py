"""BAS against Bailando's ``utils/beat_align_score.py`` (fixture: fixtures/upstream/bas_bailando.json).

Upstream's ``calc_db`` (kinetic speed, ``gaussian_filter`` sigma 5, ``argrelextrema`` minima), ``get_mb``
(beats truncated to the speed's length) and ``BA`` (tolerance 3 frames) ran on the same dlib head
landmarks of five real clips, with two beat lists: those of Bailando's ``extractor.py`` and the
project's ``music_beats``. The project must give the same motion beats and the same BA to 1e-12.
Deliberate difference (fixture "differences"): the project's music beats are librosa's onset envelope
(mean over mel bands) of the full signal on a 25 Hz grid, not Bailando's HPSS percussive part with a
median envelope; the beat lists differ (both recorded in the fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.metrics.bas import bas_from_landmarks, head_speed, motion_beats, music_beats
from benchmark.metrics.landmarks import HEAD

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
REPO = Path(__file__).resolve().parents[3]
CLIPS = ["franck_lena", "cap12_falcon_mix", "wolfgang_lena", "franck_falcon_vocals", "single_face_lena"]


@pytest.fixture(scope="module")
def upstream() -> dict:
    return json.loads((FIXTURES / "bas_bailando.json").read_text())


@pytest.fixture(scope="module")
def landmarks() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "bas_landmarks.npz") as z:
        return {k: z[k].astype(np.float64) for k in z.files}


def test_fixture_names_upstream(upstream):
    assert upstream["upstream"]["repo"] == "lisiyao21/Bailando"
    assert len(upstream["upstream"]["commit"]) == 40
    assert upstream["head_points"] == HEAD.tolist()


@pytest.mark.parametrize("name", CLIPS)
def test_motion_beats_and_ba_equal_bailando(upstream, landmarks, name):
    ref = upstream["clips"][name]
    lms = landmarks[name]
    assert lms.shape == (ref["n_frames"], 68, 2)
    speed = head_speed(lms)
    assert len(speed) == ref["speed_length"]
    assert motion_beats(speed, sigma=5.0).tolist() == ref["motion_beats"]
    for beats_key, ba_key in [
        ("music_beats_bailando_extractor", "ba_bailando_beats"),
        ("music_beats_project", "ba_project_beats"),
    ]:
        value = bas_from_landmarks(lms, np.asarray(ref[beats_key]), sigma=5.0, tolerance=3.0)
        assert value.n_music_beats == len(ref[beats_key])
        assert value.n_motion_beats == len(ref["motion_beats"])
        assert value.ba == pytest.approx(ref[ba_key], abs=1e-12)


@pytest.mark.parametrize("name", ["single_face_lena", "cap12_falcon_mix"])
def test_project_music_beats_of_the_real_audio_are_the_ones_scored(upstream, name):
    """The project beats fed to Bailando's BA are ``music_beats`` of the clip's real audio (so
    ``ba_project_beats`` is the project's end-to-end BAS of these landmarks)."""
    from benchmark.metrics.base import Clip

    clip = Clip.load(REPO / "manifests" / "sample" / "input" / f"{name}.mp4")
    beats = music_beats(clip.audio, clip.sample_rate, clip.fps)
    ref = upstream["clips"][name]
    assert beats[beats < ref["speed_length"]].tolist() == ref["music_beats_project"]
