"""``ground-truth``: the test clip itself (the paper's GT row: the ceiling for CPBD, Diversity, BAS, LSE)."""

from __future__ import annotations

from pathlib import Path

from benchmark.methods import register
from benchmark.methods.base import ClipInput, Method


@register
class GroundTruth(Method):
    name = "ground-truth"
    summary = "the ground-truth clip itself: the ceiling (SSIM 1, LMD 0, FVD ~0; real CPBD/Diversity/BAS/LSE)"
    generates = False

    def generate(self, clip: ClipInput) -> Path:
        return clip.ground_truth_video
