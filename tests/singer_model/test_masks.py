"""Masks as Hallo's release (numbers from the release's functions) and the project's hard boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from singer_model.data import DataConfig, Preprocessor, hallo_box, hallo_masks, resize_frames

FIX = Path(__file__).parent / "fixtures" / "upstream"
UPSTREAM = np.load(FIX / "hallo_masks.npz")
META = json.loads((FIX / "hallo_masks.json").read_text())


def test_fixture_names_its_upstream_commit():
    assert str(UPSTREAM["commit"]) == META["commit"] == "8fd7c572a3d43c2a9c1a5473219ce4fc1b6e3ed2"


@pytest.mark.parametrize("case", sorted(META["cases"]))
def test_hallo_masks_equal_the_release_outputs(case):
    c = META["cases"][case]
    pts = UPSTREAM[f"{case}/landmarks"]
    got = hallo_masks(pts, c["height"], c["width"], face_expand_ratio=c["face_expand_ratio"], lip_expand_ratio=2.0)
    want = {"face_region": "face_mask", "full": "sep_background", "face": "sep_face", "lip": "sep_lip"}
    for ours, theirs in want.items():
        np.testing.assert_array_equal(got[ours], UPSTREAM[f"{case}/{theirs}"], err_msg=f"{case}: {ours} vs {theirs}")
    assert got["full"].shape == (64, 64) and got["face_region"].shape == (c["height"], c["width"])
    # the structure Hallo relies on: full + face + lip covers the picture, the lip region is inside the face
    assert int(got["face"].max()) > 0 and int(got["lip"].max()) == 255 and int(got["full"].max()) == 255


def test_hallo_box_shifts_a_box_that_leaves_the_image_instead_of_clipping_it():
    pts = np.array([[10.0, 2.0], [50.0, 30.0]])
    x0, x1, y0, y1 = hallo_box(pts, 64, 64, 1.5)
    assert (x0, x1) == (0, 60)  # centre 30, half-side 30: [0, 60)
    assert y0 == 0 and y1 == 16 + 21 + 5  # [16 - 21, 16 + 21) shifted down by 5


def test_preprocessor_masks_hallo_and_boxes(shared_media):
    """Preprocessor.reference: "hallo" gives blurred masks with full = 1 - face; "boxes" hard boxes, full = 1."""
    import torch

    from singer_model.data import FaceLandmarker

    face = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)

    class _Vae:  # encode_frames only needs parameters, config and encode
        config = type("C", (), {"scaling_factor": 1.0})()

        def parameters(self):
            yield torch.zeros(1)

        def encode(self, x):
            lat = torch.nn.functional.avg_pool2d(x, 8)[:, :1].repeat(1, 4, 1, 1)
            return type("E", (), {"latent_dist": type("D", (), {"mean": lat})()})()

    out = {}
    lm = FaceLandmarker()
    for scheme in ("hallo", "boxes"):
        cfg = DataConfig(size=512, masks=scheme, identity_backend="fallback")
        pre = Preprocessor(cfg, _Vae(), audio=None, identity=_Identity())
        pre._landmarker = lm
        out[scheme] = pre.reference(face)
    lm.close()
    h = out["hallo"]
    assert h.full_mask.shape == (64, 64)
    pts = FaceLandmarker()(resize_frames(face[None], 512)[0])
    ref = hallo_masks(pts, 512, 512)
    np.testing.assert_allclose(h.full_mask.numpy(), ref["full"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(h.face_mask.numpy(), ref["face"] / 255.0, atol=1e-6)
    np.testing.assert_allclose(h.lip_mask.numpy(), ref["lip"] / 255.0, atol=1e-6)
    assert len(torch.unique(h.face_mask)) > 10  # blurred, not a box
    b = out["boxes"]
    assert torch.equal(b.full_mask, torch.ones(64, 64))
    assert set(torch.unique(b.face_region).tolist()) == {0.0, 1.0}
    assert not torch.equal(b.face_mask, h.face_mask)


class _Identity:
    backend = "fallback"

    def __call__(self, frame, box):
        import torch

        return torch.zeros(8)


def test_unknown_mask_scheme_is_refused():
    with pytest.raises(ValueError, match="masks"):
        DataConfig(masks="soft")
