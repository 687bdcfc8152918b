"""Test helper: real face video with real singing, encoded as AVI (MPEG-4 Part 2 + AC-3) or MP4
(H.264 + AAC) by FFmpeg, and copies with one packet damaged on purpose."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import av
import imageio_ffmpeg

#: encoders per container: (video args, audio args)
CODECS = {
    "avi": (["-c:v", "mpeg4", "-q:v", "4"], ["-c:a", "ac3", "-b:a", "128k"]),
    "mp4": (["-c:v", "libx264", "-preset", "veryfast", "-g", "50"], ["-c:a", "aac", "-b:a", "96k"]),
}


def encode(shared_media: Path, out: Path, container: str, seconds: float = 8.0) -> Path:
    """``seconds`` of franck.mp4's face with lena.wav's singing under it."""
    vargs, aargs = CODECS[container]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(shared_media / "franck.mp4"),
                    "-i", str(shared_media / "lena.wav"), "-t", f"{seconds}", "-map", "0:v", "-map", "1:a",
                    *vargs, *aargs, "-shortest", str(out)], check=True)
    return out


def packets(path: Path, kind: str) -> list[tuple[int, int, float]]:
    """``(file offset, size, time in s)`` of the packets of the first ``kind`` stream."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0] if kind == "audio" else c.streams.video[0]
        return [(p.pos, p.size, float((p.pts if p.pts is not None else p.dts) * s.time_base))
                for p in c.demux(s) if p.size]


def damage(src: Path, dst: Path, kind: str, index: int, n_bytes: int = 8, seed: int = 1) -> float:
    """Copy ``src`` to ``dst`` with the first ``n_bytes`` of the ``index``-th ``kind`` packet overwritten
    with random bytes (its decoder then refuses it); returns that packet's time in seconds."""
    pos, _, t = packets(src, kind)[index]
    shutil.copyfile(src, dst)
    rnd = random.Random(seed)
    with open(dst, "r+b") as fh:
        fh.seek(pos)
        fh.write(bytes(rnd.randrange(256) for _ in range(n_bytes)))
    return t
