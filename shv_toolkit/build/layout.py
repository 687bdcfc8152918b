"""Where a build writes: everything under ``--out``, manifests at its top."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BuildLayout:
    """Paths of a build directory::

        out/  sources.parquet clips.parquet train.parquet test.parquet build_config.json
              downloads/  clips/<source_id>/<clip_id>.mp4|.wav|.vocals.wav  logs/build.log
              report.html
              work/<source_id>/  plan.json  groups/<i>.json  result.json  audio-<rate>.npy
                                 thumbs/<clip_id>.jpg  (a still of every candidate clip, for the report)
    """

    out: Path

    @property
    def downloads(self) -> Path:
        return self.out / "downloads"

    @property
    def clips(self) -> Path:
        return self.out / "clips"

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def config_file(self) -> Path:
        return self.out / "build_config.json"

    def clip_dir(self, source_id: str) -> Path:
        return self.clips / source_id

    def result_file(self, source_id: str) -> Path:
        return self.work / source_id / "result.json"

    def plan_file(self, source_id: str) -> Path:
        return self.work / source_id / "plan.json"

    def group_file(self, source_id: str, index: int) -> Path:
        return self.work / source_id / "groups" / f"{index:05d}.json"

    def thumbs_dir(self, source_id: str) -> Path:
        return self.work / source_id / "thumbs"

    def thumb(self, source_id: str, clip_id: str) -> Path:
        return self.thumbs_dir(source_id) / f"{clip_id}.jpg"

    @property
    def report_file(self) -> Path:
        return self.out / "report.html"

    def audio_cache(self, source_id: str, rate: int) -> Path:
        return self.work / source_id / f"audio-{int(rate)}.npy"

    def audio_caches(self, source_id: str) -> list[Path]:
        return sorted((self.work / source_id).glob("audio-*.npy"))

    def make(self) -> None:
        for d in (self.out, self.downloads, self.clips, self.work, self.logs):
            d.mkdir(parents=True, exist_ok=True)
