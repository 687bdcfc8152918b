"""Sources with damaged packets build as FFmpeg decodes them: counted per stream, clips over the damage
dropped as damaged_stream, and the source fails only above filters.max_damaged_share."""

from __future__ import annotations

import pandas as pd
import pytest

from shv_toolkit.build import run_build
from shv_toolkit.config import BuildConfig
from shv_toolkit.core import media

from ..damaged_media import damage, encode


@pytest.fixture(scope="module")
def damaged_list(shared_media, tmp_path_factory):
    """AC-3 in AVI with one damaged audio packet; H.264 in MP4 with one damaged video packet."""
    d = tmp_path_factory.mktemp("damaged")
    avi = encode(shared_media, d / "intact.avi", "avi")
    mp4 = encode(shared_media, d / "intact.mp4", "mp4")
    damage(avi, d / "audio_damaged.avi", "audio", 40)
    damage(mp4, d / "video_damaged.mp4", "video", 70)
    spans = {}
    for name in ("audio_damaged.avi", "video_damaged.mp4"):
        dmg = media.StreamDamage()
        media.read_audio(d / name, 16000, damage=dmg)
        list(media.iter_frames(d / name, 25.0, max_side=64, decoder_threads=1, damage=dmg))
        spans[name] = dmg
    lst = d / "list.txt"
    lst.write_text("audio_damaged.avi\nvideo_damaged.mp4\n")
    return lst, spans


def _cfg(**filters) -> BuildConfig:
    cfg = BuildConfig()
    cfg.vocals.backend = "none"
    for k, v in filters.items():
        setattr(cfg.filters, k, v)
    return cfg


def test_damaged_sources_keep_their_intact_clips(damaged_list, tmp_path):
    lst, spans = damaged_list
    summary = run_build(lst, tmp_path, _cfg(), progress=False)
    sources = pd.read_parquet(tmp_path / "sources.parquet").set_index("local_path")
    clips = pd.read_parquet(tmp_path / "clips.parquet")
    assert summary.n_failed == 0, summary.failures
    for name, (video, audio) in {"audio_damaged.avi": (0, 1), "video_damaged.mp4": (1, 0)}.items():
        row = sources.loc[[p for p in sources.index if p.endswith(name)][0]]
        assert (row.n_damaged_packets_video, row.n_damaged_packets_audio) == (video, audio)
        assert row.damaged_seconds == pytest.approx(spans[name].seconds(), abs=0.2)
        mine = clips[clips.source_id == row.source_id]
        assert len(mine) >= 3
        for c in mine.itertuples():
            hit = spans[name].within(c.start_s, c.end_s)
            if hit > 0:
                assert (c.keep, c.drop_reason, c.drop_threshold) == (False, "damaged_stream", 0.0)
                assert c.drop_value == pytest.approx(hit, abs=0.2)
            else:
                assert c.drop_reason != "damaged_stream"
        assert (mine.drop_reason == "damaged_stream").sum() >= 1
        assert (mine.drop_reason != "damaged_stream").sum() >= 2


def test_a_source_fails_only_above_the_damaged_share(damaged_list, tmp_path):
    lst, _ = damaged_list
    summary = run_build(lst, tmp_path, _cfg(max_damaged_share=0.001), progress=False)
    sources = pd.read_parquet(tmp_path / "sources.parquet")
    assert summary.n_failed == 2 and (sources.status == "failed").all()
    assert sources.error.str.contains("damaged streams").all()
    assert (sources.n_damaged_packets_video + sources.n_damaged_packets_audio == 1).all()
