"""Test helper: write real frames and audio with any encoder PyAV ships (codecs, bit depths, tags)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_av(path: Path, frames: np.ndarray, audio: np.ndarray, sample_rate: int, *, container: str = "mp4",
             vcodec: str = "libx264", pix_fmt: str = "yuv420p", acodec: str = "aac",
             options: dict[str, str] | None = None, frame_times_ms: list[int] | None = None) -> Path:
    """``frames`` (T, H, W, 3) RGB at 25 fps (or at ``frame_times_ms``, for variable frame rate)
    converted to ``pix_fmt`` and encoded with ``vcodec`` (with ``options``); ``audio`` mono float32 at
    ``sample_rate`` encoded with ``acodec``."""
    with av.open(str(path), "w", format=container) as c:
        v = c.add_stream(vcodec, rate=25)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        v.options = dict(options or {})
        if frame_times_ms is not None:
            v.codec_context.time_base = Fraction(1, 1000)
        a = c.add_stream(acodec, rate=sample_rate)
        a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)
            if frame_times_ms is None:
                vf.pts = i
            else:
                vf.pts, vf.time_base = frame_times_ms[i], Fraction(1, 1000)
            for pkt in v.encode(vf):
                c.mux(pkt)
        for pkt in v.encode(None):
            c.mux(pkt)
        af = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        af.sample_rate, af.pts = sample_rate, 0
        for pkt in a.encode(af):
            c.mux(pkt)
        for pkt in a.encode(None):
            c.mux(pkt)
    return path
