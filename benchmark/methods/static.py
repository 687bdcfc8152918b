"""``static``: the reference frame repeated for the whole clip (a floor every method must beat on motion)."""

from __future__ import annotations

import numpy as np

from benchmark.methods import register
from benchmark.methods.base import ClipInput, Method


@register
class Static(Method):
    name = "static"
    summary = "the reference (first) frame repeated: a floor on motion metrics (Diversity, BAS)"

    def generate(self, clip: ClipInput) -> np.ndarray:
        return np.repeat(clip.reference_image[None], clip.num_frames, axis=0)
