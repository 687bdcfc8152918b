"""Method registry, the singer interface, external checks, and the runner's JSON state codec."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmark import runner
from benchmark.methods import METHODS, describe_methods, make_method, register
from benchmark.methods.base import ClipInput, Method, MethodError, MethodUnavailableError, MissingVideoError
from benchmark.methods.singer import VARIANTS, SingerUnavailableError, load_generate_function
from benchmark.metrics.bas import BAS
from benchmark.metrics.fvd import FVD
from benchmark.metrics.ssim import SSIM
from benchmark.runner import BenchConfig, read_clips, run_bench, state_names
from shv_toolkit.core.errors import UsageError


def _clip(tmp_path: Path, n: int = 5) -> ClipInput:
    rng = np.random.default_rng(1)
    return ClipInput("c1", rng.integers(0, 255, (32, 24, 3), dtype=np.uint8), np.zeros(n * 640, np.float32),
                     16000, n, 25.0, tmp_path / "gt.mp4")


def test_registry_has_the_builtin_methods():
    assert {"ground-truth", "static", "external", "singer", "singer-no-msm", "singer-no-sfm",
            "singer-no-both"} <= set(METHODS)
    text = describe_methods()
    assert "--videos DIR --name ROW_NAME" in text and "--checkpoint DIR" in text
    with pytest.raises(UsageError, match="unknown method"):
        make_method("hallo")


def test_static_repeats_the_reference_frame(tmp_path):
    clip = _clip(tmp_path)
    frames = make_method("static").generate(clip)
    assert frames.shape == (5, 32, 24, 3) and frames.dtype == np.uint8
    assert all(np.array_equal(f, clip.reference_image) for f in frames)
    assert make_method("ground-truth").generate(clip) == clip.ground_truth_video


def test_external_checks_its_options(tmp_path):
    with pytest.raises(UsageError, match="--videos"):
        make_method("external", name="x")
    with pytest.raises(UsageError, match="--name"):
        make_method("external", videos=tmp_path)
    with pytest.raises(UsageError, match="built-in"):
        make_method("external", videos=tmp_path, name="static")
    with pytest.raises(MethodUnavailableError, match="not a directory"):
        make_method("external", videos=tmp_path / "nope", name="x").check()
    (tmp_path / "c1.mp4").write_bytes(b"x")
    (tmp_path / "c1.mov").write_bytes(b"y")
    with pytest.raises(MethodUnavailableError, match="two videos"):
        make_method("external", videos=tmp_path, name="x").check()
    (tmp_path / "c1.mov").unlink()
    m = make_method("external", videos=tmp_path, name="x")
    m.check()
    assert m.row_name == "x" and m.generate(_clip(tmp_path)) == tmp_path / "c1.mp4"
    with pytest.raises(MissingVideoError, match="c2"):
        m.generate(dataclasses.replace(_clip(tmp_path), clip_id="c2"))
    assert m.clip_fingerprint("c2") == {"video": None}
    assert m.clip_fingerprint("c1")["sha256"] != m.clip_fingerprint("c2").get("sha256")


def test_singer_needs_checkpoint_and_inference_api(tmp_path, monkeypatch):
    with pytest.raises(SingerUnavailableError, match="--checkpoint"):
        make_method("singer").check()
    with pytest.raises(SingerUnavailableError, match="not a directory"):
        make_method("singer", checkpoint=tmp_path / "none").check()
    monkeypatch.setitem(sys.modules, "singer_model.infer", None)
    with pytest.raises(SingerUnavailableError, match=r"singer_model\.infer.*generate_video"):
        make_method("singer", checkpoint=tmp_path).check()
    module = types.ModuleType("singer_model.infer")
    monkeypatch.setitem(sys.modules, "singer_model.infer", module)
    with pytest.raises(SingerUnavailableError, match="has no function generate_video"):
        load_generate_function()
    module.generate_video = lambda reference_image, audio: None  # wrong signature
    with pytest.raises(SingerUnavailableError, match="checkpoint_dir, variant, num_frames"):
        load_generate_function()


def test_singer_calls_the_documented_interface(tmp_path, monkeypatch):
    """Wiring the model later is one function: check what the bench passes and how it validates the result."""
    calls = []

    def generate_video(reference_image, audio, checkpoint_dir, variant, num_frames, fps=25, seed=0, device="cpu"):
        calls.append(dict(reference_image=reference_image, audio=audio, checkpoint_dir=checkpoint_dir,
                          variant=variant, num_frames=num_frames, fps=fps, seed=seed, device=device))
        return np.repeat(reference_image[None], num_frames, axis=0)

    module = types.ModuleType("singer_model.infer")
    module.generate_video = generate_video
    monkeypatch.setitem(sys.modules, "singer_model.infer", module)
    clip = _clip(tmp_path)
    for name in ("singer", "singer-no-msm", "singer-no-sfm", "singer-no-both"):
        variant = name
        m = make_method(name, checkpoint=tmp_path, seed=3)
        m.check()
        frames = m.generate(clip)
        assert frames.shape == (5, 32, 24, 3)
        assert calls[-1]["variant"] == variant and variant in VARIANTS
        assert calls[-1]["checkpoint_dir"] == tmp_path and calls[-1]["seed"] == 3
        assert calls[-1]["num_frames"] == 5 and calls[-1]["audio"] is clip.audio
    module.generate_video = lambda **kw: np.zeros((4, 8, 8, 3), np.uint8)  # wrong length
    m = make_method("singer", checkpoint=tmp_path)
    m.check()
    with pytest.raises(MethodError, match="returned 4 frames"):
        m.generate(clip)


def test_registering_a_method_is_one_class(sample_build, tmp_path):
    @register
    class Mirror(Method):
        name = "test-mirror"
        summary = "reference frame mirrored (test)"

        def generate(self, clip: ClipInput) -> np.ndarray:
            return np.repeat(clip.reference_image[None, :, ::-1], clip.num_frames, axis=0)

    try:
        res = run_bench(BenchConfig(method="test-mirror", manifest=sample_build[0] / "test.parquet",
                                    out=tmp_path, metrics=["ssim", "psnr"], limit=1, progress=False))
        assert res.row["method"] == "test-mirror" and 0 < res.row["SSIM"] < 1
        assert (tmp_path / "videos" / "test-mirror").is_dir()
    finally:
        METHODS.pop("test-mirror")


def test_read_clips_resolves_paths(sample_build):
    items = read_clips(sample_build[0] / "test.parquet", limit=2)
    assert len(items) == 2
    for it in items:
        assert it.video.is_file() and it.audio.is_file() and it.vocals.is_file()
        assert it.n_frames == 50


# --------------------------------------------------------------------------- state codec


def test_state_names_are_what_reset_assigns():
    assert state_names(SSIM()) == ["per_clip"]
    assert set(state_names(FVD())) >= {"n", "sum", "outer", "n_clips", "short_clips"}
    assert "per_clip" in state_names(BAS())
    # a restored one-clip state merges like the original object
    a = SSIM()
    a.per_clip = {"c1": 0.5}
    b = runner.set_state(runner.fresh_shard(a), runner.get_state(a))
    assert b.per_clip == {"c1": 0.5} and b is not a


def test_protocol_overrides_are_named():
    p = runner.protocol_with_overrides("shv-v1", fvd_stride=16)
    assert p.name == "shv-v1[fvd_stride=16]" and p.fvd_stride == 16
    assert runner.protocol_with_overrides("shv-v1", fvd_stride=1).name == "shv-v1"
    with pytest.raises(UsageError):
        BenchConfig(method="static", manifest=Path("m"), out=Path("o"), metrics=["nope"])
