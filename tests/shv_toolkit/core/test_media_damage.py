"""Damaged packets are skipped as FFmpeg skips them, counted, and keep audio on the video's timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shv_toolkit.core import media

from ..damaged_media import damage, encode, packets


@pytest.fixture(scope="module")
def intact(shared_media, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("intact")
    return {c: encode(shared_media, d / f"intact.{c}", c) for c in ("avi", "mp4")}


def _lag(ref: np.ndarray, got: np.ndarray, at: int = 48000, n: int = 8000) -> int:
    seg = ref[at:at + n]
    return max(range(-1500, 1501), key=lambda s: float(np.dot(seg, got[at + s:at + s + n])))


@pytest.mark.parametrize("container", ["avi", "mp4"])  # AC-3 in AVI, AAC in MP4
def test_damaged_audio_packet_becomes_silence_in_place(intact, tmp_path, container):
    bad = tmp_path / f"bad_audio.{container}"
    t_bad = damage(intact[container], bad, "audio", 40)
    ref = media.read_audio(intact[container], 16000)
    dmg = media.StreamDamage()
    got = media.read_audio(bad, 16000, damage=dmg)
    assert dmg.n_packets == 1
    # where the decoder notices: within a packet of the damaged one (AC-3 frames straddle AVI chunks)
    start, end = min(a for a, _ in dmg.spans), max(b for _, b in dmg.spans)
    assert abs(start - t_bad) < 0.05
    assert 0.02 < dmg.seconds() < 0.2  # one packet, and a following one the decoder may swallow
    assert abs(len(got) - len(ref)) <= 2
    cut = int(start * 16000) - 400
    np.testing.assert_array_equal(got[:cut], ref[:cut])  # before the damage: the same samples
    assert _lag(ref, got) == 0  # after it: still in sync (FFmpeg's CLI drops the packet and shifts)
    gap = got[int((start + 0.005) * 16000):int((end - 0.005) * 16000)]
    assert gap.size and np.abs(gap).max() < 0.05  # the damaged time is (near) silence


@pytest.mark.parametrize("container", ["avi", "mp4"])  # MPEG-4 Part 2 in AVI, H.264 in MP4
def test_damaged_video_packet_is_skipped_up_to_the_next_keyframe(intact, tmp_path, container):
    bad = tmp_path / f"bad_video.{container}"
    vids = packets(intact[container], "video")
    index = 70
    t_bad = damage(intact[container], bad, "video", index)
    dmg = media.StreamDamage()
    n_ref = sum(1 for _ in media.iter_frames(intact[container], 25.0, max_side=64))
    frames = [k for k, _ in media.iter_frames(bad, 25.0, max_side=64, damage=dmg)]
    assert frames == list(range(n_ref))  # the grid is complete: the previous frame stays on screen
    assert dmg.n_packets == 1 and len(dmg.spans) == 1
    a, b = dmg.spans[0]
    # at the damaged packet, or a little earlier with frame threads (errors surface with delay)
    assert t_bad - 0.5 < a <= t_bad + 1e-3
    with media._open(intact[container]) as c:
        keys = [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe]
    after = [k for k in keys if k > t_bad] + [vids[-1][2] + 1 / 25] * 2
    # up to the next keyframe (or the one after it, when the error surfaced on that keyframe's packet)
    assert after[0] - 0.05 <= b <= after[1] + 0.05


def test_intact_files_report_no_damage_and_decoding_without_a_log_still_skips(intact, tmp_path):
    dmg = media.StreamDamage()
    media.read_audio(intact["avi"], 16000, damage=dmg)
    list(media.iter_frames(intact["avi"], 25.0, max_side=64, damage=dmg))
    assert dmg.n_packets == 0 and dmg.seconds() == 0.0
    bad = tmp_path / "bad.avi"
    damage(intact["avi"], bad, "video", 30)
    assert sum(1 for _ in media.iter_frames(bad, 25.0, max_side=64)) > 150


def test_stream_damage_seconds_merge_overlaps():
    d = media.StreamDamage(3, [(1.0, 2.0), (1.5, 2.5), (4.0, 4.5)])
    assert d.seconds() == pytest.approx(2.0)
    assert d.within(2.4, 3.0) == pytest.approx(0.1) and d.within(2.5, 4.0) == 0.0
    assert d.within(0.0, 10.0) == pytest.approx(2.0)
