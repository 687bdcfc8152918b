"""Issue 16 part 5: the largest face is chosen on a real 3-face 1080p still, the protocol's detector
setting reaches the backend (and the cache keeps settings apart), and frames without landmarks are
counted per clip in the LMD, Diversity and BAS extras and in the leaderboard notes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmark.metrics.base import Clip, MetricResult
from benchmark.metrics.landmarks import CACHE, backend_for, get_backend
from benchmark.metrics.landmarks.multiface import LARGEST, PLACEMENTS, SIZE, face_at, three_face_still
from benchmark.protocol import get_protocol
from shv_toolkit.core import media

N_FRAMES = 12
BLANK = (2, 7, 8)  # frames made black in the generated clip: no face there


@pytest.fixture(scope="module")
def still(shared_media) -> np.ndarray:
    return three_face_still(shared_media)


@pytest.fixture(scope="module")
def face_clip(shared_media) -> np.ndarray:
    return np.ascontiguousarray(media.read_video(shared_media / "single_face.mp4")[:N_FRAMES])


def test_still_has_three_faces_the_largest_about_386_px(still) -> None:
    import dlib

    assert still.shape == (*SIZE, 3)
    rects = dlib.get_frontal_face_detector()(still, 1)
    names = sorted(face_at(np.array([[r.center().x, r.center().y]])) for r in rects)
    assert names == sorted(p.name for p in PLACEMENTS)  # one detection in each pasted rectangle
    big = max(rects, key=lambda r: r.width() * r.height())
    assert face_at(np.array([[big.center().x, big.center().y]])) == LARGEST
    assert 340 <= big.width() <= 440


@pytest.mark.parametrize(
    "name, options", [("dlib", {"upsample": 0}), ("dlib", {"upsample": 1}), ("mediapipe", {})]
)
def test_backend_picks_the_largest_face_wherever_it_is(still, name, options) -> None:
    be = get_backend(name, **options)
    assert face_at(be.detect(still)) == LARGEST
    # mirrored: the large face on the right, detection order changes; the choice must not
    mirrored = np.ascontiguousarray(still[:, ::-1])
    pts = be.detect(mirrored)
    assert pts is not None
    unmirrored = pts.copy()
    unmirrored[:, 0] = SIZE[1] - 1 - pts[:, 0]
    assert face_at(unmirrored) == LARGEST


def test_protocol_upsample_reaches_dlib_and_the_cache_keeps_settings_apart(face_clip) -> None:
    shv, paper = get_protocol("shv-v1"), get_protocol("singer-paper")
    assert backend_for(None, paper).setting == "upsample=1"  # LMDMeter's setting
    assert backend_for(None, shv).setting == f"upsample={shv.landmark_upsample}"
    assert backend_for("dlib", paper).setting == "upsample=1"  # the protocol's backend named explicitly
    assert backend_for(None, paper).describe()["landmark_setting"] == "upsample=1"
    frames = face_clip[:2]
    CACHE.clear()
    CACHE.get(get_backend("dlib", upsample=0), frames)
    CACHE.get(get_backend("dlib", upsample=1), frames)
    assert (CACHE.hits, CACHE.misses) == (0, 2)


def test_fingerprint_records_the_landmark_setting() -> None:
    shv = get_protocol("shv-v1")
    other = dataclasses.replace(shv, landmark_upsample=shv.landmark_upsample + 1)
    assert other.fingerprint() != shv.fingerprint()


def _clips(face_clip: np.ndarray) -> tuple[Clip, Clip]:
    gen = face_clip.copy()
    gen[list(BLANK)] = 0
    t = np.arange(int(N_FRAMES / 25 * 16000)) / 16000
    audio = (np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    return (Clip(gen, clip_id="c1", audio=audio), Clip(face_clip.copy(), clip_id="c1", audio=audio))


def test_frames_without_landmarks_in_extras_and_notes(face_clip) -> None:
    from benchmark.leaderboard import landmark_notes
    from benchmark.metrics.bas import BAS
    from benchmark.metrics.diversity import Diversity
    from benchmark.metrics.lmd import LMD

    gen, gt = _clips(face_clip)
    expected_gen = {"generated": len(BLANK), "frames": N_FRAMES}
    lmd, div, bas = LMD(), Diversity(), BAS()
    lmd.update(gen, gt)
    div.update(gen, gt)
    bas.update(gen, gt)
    r_lmd = lmd.compute()
    assert r_lmd.extras["frames_without_landmarks"] == {"c1": {**expected_gen, "ground_truth": 0}}
    assert r_lmd.extras["skipped_frames"] == len(BLANK)
    assert div.compute().extras["frames_without_landmarks"] == {"c1": expected_gen}
    r_bas = bas.compute()
    assert r_bas.extras["frames_without_landmarks"] == {"c1": expected_gen}
    # Diversity's counts survive a shard merge
    other = Diversity()
    other.update(dataclasses.replace(gen, clip_id="c2"), dataclasses.replace(gt, clip_id="c2"))
    div.merge(other)
    assert div.compute().extras["frames_without_landmarks"] == {"c1": expected_gen, "c2": expected_gen}

    notes = landmark_notes({"lmd": r_lmd, "bas": r_bas})
    assert notes == [
        f"frames without landmarks: {len(BLANK)} of {N_FRAMES} generated frames (c1 {len(BLANK)}/{N_FRAMES})",
        f"frames without landmarks: none of {N_FRAMES} ground-truth frames",
    ]
    assert landmark_notes({"ssim": MetricResult("ssim", 0.5, True, 1)}) == []
    # and in a leaderboard row's notes
    from benchmark.leaderboard import make_row

    row = make_row(
        method="m",
        dataset="d",
        protocol=get_protocol("shv-v1"),
        results={"lmd": r_lmd, "bas": r_bas},
        requested=["lmd", "bas"],
        missing={},
        n_clips=1,
        failures={},
        extractor_hashes={},
        driving_audio="mix",
        manifest="m",
        date="d",
    )
    assert all(n in row["notes"] for n in notes)


def _box_rect(name: str):
    import dlib

    x0, y0, x1, y1 = next(p.box() for p in PLACEMENTS if p.name == name)
    return dlib.rectangle(x0, y0, x1, y1)


@pytest.mark.parametrize("order", [("biden", "obama", "einstein"), ("obama", "einstein", "biden")])
def test_dlib_keeps_the_largest_box_whatever_the_detector_order(still, order, monkeypatch) -> None:
    be = get_backend("dlib", upsample=0)
    rects = [_box_rect(n) for n in order]  # the pasted rectangles: obama's is the largest
    monkeypatch.setattr(be, "_detector", lambda frame, upsample: rects)
    assert face_at(be.detect(still)) == LARGEST


def test_mediapipe_keeps_the_largest_mesh_whatever_the_graph_order(still) -> None:
    from types import SimpleNamespace

    be = get_backend("mediapipe")
    h, w = still.shape[:2]

    def face(name: str) -> SimpleNamespace:  # a mesh filling the pasted rectangle of ``name``
        x0, y0, x1, y1 = next(p.box() for p in PLACEMENTS if p.name == name)
        xs, ys = np.linspace(x0 + 10, x1 - 10, 478), np.linspace(y0 + 10, y1 - 10, 478)
        return SimpleNamespace(
            landmark=[SimpleNamespace(x=(x + 0.5) / w, y=(y + 0.5) / h) for x, y in zip(xs, ys, strict=True)]
        )

    for order in (("biden", "obama"), ("obama", "einstein"), ("einstein", "biden", "obama")):
        session = SimpleNamespace(
            process=lambda frame, o=order: SimpleNamespace(multi_face_landmarks=[face(n) for n in o])
        )
        assert face_at(be.mesh(still, session)) == LARGEST
