"""Pipeline step 10: a PyTorch ``Dataset`` over a split manifest (``train.parquet`` / ``test.parquet``).

Example::

    from torch.utils.data import DataLoader
    from shv_toolkit.dataset import SHVDataset

    ds = SHVDataset("out/train.parquet", frames="float", prefer_vocals=True)
    loader = DataLoader(ds, batch_size=4, collate_fn=SHVDataset.collate, num_workers=2)
    for batch in loader:
        batch["frames"]  # (B, T, 3, H, W) float32 in [0, 1]
        batch["audio"]   # (B, N) float32, 16 kHz mono
        batch["metadata"]  # list of B dicts (the manifest row + resolved paths)

Paths in the manifest are relative to the manifest's directory, so a dataset directory can be
moved or copied as a whole. Decoding goes through :mod:`shv_toolkit.core.media` (PyAV).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from shv_toolkit.core import media
from shv_toolkit.core.errors import MediaError
from shv_toolkit.manifest.io import read_rows

FramesFormat = Literal["uint8", "float"]


class SHVDataset(Dataset):
    """Clips of one manifest as ``dict(frames, audio, metadata)``.

    ``frames="uint8"``: ``(T, H, W, 3)`` uint8 tensor (RGB, as stored); ``frames="float"``:
    ``(T, 3, H, W)`` float32 in ``[0, 1]``. ``audio``: float32 mono at ``sample_rate`` with exactly
    ``round(n_frames / fps * sample_rate)`` samples (zero-padded or trimmed), taken from the clip's
    vocals stem when ``prefer_vocals`` and one exists, otherwise from the mix wav.
    ``metadata``: the manifest row (plain Python values) plus ``video_file``/``audio_file``
    (absolute paths) and ``audio_source`` (``"vocals"`` or ``"mix"``).
    ``kept_only`` (default) skips rows with ``keep = false``, so ``clips.parquet`` can be used too.
    ``transform`` is applied to the returned dict.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        frames: FramesFormat = "uint8",
        prefer_vocals: bool = False,
        sample_rate: int = 16000,
        kept_only: bool = True,
        root: str | os.PathLike | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if frames not in ("uint8", "float"):
            raise ValueError(f"frames must be 'uint8' or 'float', got {frames!r}")
        self.manifest = Path(manifest)
        self.root = Path(root) if root is not None else self.manifest.resolve().parent
        self.frames_format: FramesFormat = frames
        self.prefer_vocals = prefer_vocals
        self.sample_rate = int(sample_rate)
        self.transform = transform
        rows = read_rows(self.manifest)
        self.rows: list[dict[str, Any]] = [r for r in rows if r.get("keep")] if kept_only else rows

    def __len__(self) -> int:
        return len(self.rows)

    def _path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    def n_samples(self, row: dict[str, Any]) -> int:
        return int(round(row["n_frames"] / row["fps"] * self.sample_rate))

    def load_frames(self, row: dict[str, Any]) -> np.ndarray:
        if row.get("video_path") is None:
            raise MediaError(f"clip {row['clip_id']} has no video file")
        path = self._path(row["video_path"])
        frames = media.read_video(path, fps=float(row["fps"]))
        if len(frames) != row["n_frames"]:
            raise MediaError(f"{path.name}: decoded {len(frames)} frames, manifest says {row['n_frames']}")
        return frames

    def load_audio(self, row: dict[str, Any]) -> tuple[np.ndarray, str, Path]:
        use_vocals = self.prefer_vocals and row.get("vocals_path") is not None
        rel = row["vocals_path"] if use_vocals else row.get("audio_path")
        if rel is None:
            raise MediaError(f"clip {row['clip_id']} has no audio file")
        path = self._path(rel)
        audio = media.read_audio(path, sample_rate=self.sample_rate)
        n = self.n_samples(row)
        if len(audio) < n:
            audio = np.pad(audio, (0, n - len(audio)))
        return audio[:n].astype(np.float32, copy=False), ("vocals" if use_vocals else "mix"), path

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        frames = torch.from_numpy(np.ascontiguousarray(self.load_frames(row)))
        if self.frames_format == "float":
            frames = frames.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        audio, source, audio_file = self.load_audio(row)
        meta = dict(row)
        meta.update(video_file=str(self._path(row["video_path"])), audio_file=str(audio_file), audio_source=source)
        item = {"frames": frames, "audio": torch.from_numpy(audio), "metadata": meta}
        return self.transform(item) if self.transform else item

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack frames and audio; metadata stays a list of dicts (they hold ``None`` and NaN)."""
        return {
            "frames": torch.stack([b["frames"] for b in batch]),
            "audio": torch.stack([b["audio"] for b in batch]),
            "metadata": [b["metadata"] for b in batch],
        }

    def duration_s(self) -> float:
        """Total duration of the clips in seconds."""
        return float(math.fsum(r["n_frames"] / r["fps"] for r in self.rows))
