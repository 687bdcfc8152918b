"""Method registry, the singer interface, external checks, and the runner's JSON state codec."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmark import runner
from benchmark.core import decode_state, encode_state, fresh_shard
from benchmark.methods import METHODS, describe_methods, make_method, register
from benchmark.methods.base import ClipInput, Method, MethodError, MethodUnavailableError, MissingVideoError
from benchmark.methods.singer import ALIASES, VARIANTS, SingerUnavailableError, load_infer_module
from benchmark.metrics.bas import BAS
from benchmark.metrics.fvd import FVD
from benchmark.metrics.ssim import SSIM
from benchmark.runner import BenchConfig, read_clips, run_bench
from shv_toolkit.core.errors import UsageError


def _clip(tmp_path: Path, n: int = 5) -> ClipInput:
    rng = np.random.default_rng(1)
    return ClipInput("c1", rng.integers(0, 255, (32, 24, 3), dtype=np.uint8), np.zeros(n * 640, np.float32),
                     16000, n, 25.0, tmp_path / "gt.mp4")


def test_registry_has_the_builtin_methods():
    assert {"ground-truth", "static", "external", "singer", "hallo", "singer-minus-msm", "singer-minus-sfm",
            "singer-minus-both", "singer-no-msm", "singer-no-sfm", "singer-no-both"} <= set(METHODS)
    text = describe_methods()
    assert "--videos DIR --name ROW_NAME" in text and "--checkpoint DIR|CONFIG.yaml" in text
    with pytest.raises(UsageError, match="unknown method"):
        make_method("nope")


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
    with pytest.raises(SingerUnavailableError, match="hallo_release.yaml"):
        make_method("hallo").check()
    with pytest.raises(SingerUnavailableError, match="not a checkpoint directory nor a config .yaml"):
        make_method("singer", checkpoint=tmp_path / "none").check()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SingerUnavailableError, match="not a checkpoint directory nor a config .yaml"):
        make_method("singer", checkpoint=tmp_path / "notes.txt").check()
    with pytest.raises(SingerUnavailableError, match="not a checkpoint directory nor a config .yaml"):
        make_method("hallo", checkpoint=tmp_path / "absent.yaml").check()
    monkeypatch.setitem(sys.modules, "singer_model.infer", None)
    with pytest.raises(SingerUnavailableError, match=r"singer_model\.infer.*load_pipeline.*generate_video"):
        make_method("singer", checkpoint=tmp_path).check()
    module = types.ModuleType("singer_model.infer")
    monkeypatch.setitem(sys.modules, "singer_model.infer", module)
    with pytest.raises(SingerUnavailableError, match="has no load_pipeline, GenerationRequest"):
        load_infer_module()


class _FakePipeline:
    def __init__(self, checkpoint, variant, device, dtype, backend="fallback", frames=None):
        self.args = dict(checkpoint=checkpoint, variant=variant, device=device, dtype=dtype)
        self.identity_backend = backend
        self.batches: list[list] = []
        self.frames = frames
        self.closed = False

    def generate_batch(self, requests, fps=25, **sampler):
        self.batches.append([requests, fps, sampler])
        if self.frames is not None:
            return [self.frames for _ in requests]
        return [np.repeat(r.reference_image[None], r.num_frames, axis=0) for r in requests]

    def close(self):
        self.closed = True


def _fake_infer(monkeypatch, model: dict | None = None, **pipe_kw):
    import dataclasses as dc

    import torch

    from singer_model.config import SingerConfig

    @dc.dataclass
    class Request:
        reference_image: np.ndarray
        audio: np.ndarray
        num_frames: int | None = None
        seed: int = 0

    module = types.ModuleType("singer_model.infer")
    module.pipes = []

    def load_pipeline(checkpoint, variant, device, dtype):
        module.pipes.append(_FakePipeline(checkpoint, variant, device, dtype, **pipe_kw))
        return module.pipes[-1]

    module.load_pipeline = load_pipeline
    module.GenerationRequest = Request
    module.resolve_dtype = lambda d, dev: {"auto": torch.float32, "bf16": torch.bfloat16}[d]
    module.checkpoint_config = lambda ckpt: ({"model": model or {}}, Path(ckpt))
    module.model_config_from = lambda d: SingerConfig.hallo() if d.get("preset") == "hallo" else SingerConfig.tiny()
    monkeypatch.setitem(sys.modules, "singer_model.infer", module)
    return module


def test_model_methods_call_the_pipeline_as_documented(tmp_path, monkeypatch):
    module = _fake_infer(monkeypatch)
    clip = _clip(tmp_path)
    config = tmp_path / "hallo_release.yaml"
    config.write_text("model: {preset: hallo}\n")
    names = ["singer", "hallo", "singer-minus-msm", "singer-minus-sfm", "singer-minus-both", *ALIASES]
    for name in names:
        ckpt = config if name == "hallo" else tmp_path  # a config YAML stands for a checkpoint directory
        m = make_method(name, checkpoint=ckpt, seed=3, steps=2)
        m.check()
        pipe = module.pipes[-1]
        frames = m.generate(clip)
        assert frames.shape == (5, 32, 24, 3)
        assert pipe.args["variant"] == VARIANTS[ALIASES.get(name, name)]
        assert pipe.args["checkpoint"] == ckpt and pipe.args["device"] == "cpu"
        (requests, fps, sampler), = pipe.batches
        assert len(requests) == 1 and requests[0].seed == 3 and requests[0].num_frames == 5
        assert requests[0].audio is clip.audio and fps == 25.0 and sampler == {"steps": 2}
        assert type(m).driving_audio == "vocals"  # the release separates the vocals
        m.close()
        assert pipe.closed
    assert VARIANTS["hallo"] == VARIANTS["singer-minus-both"] == "singer-no-both"
    assert VARIANTS["singer"] == "singer"
    # the old names are aliases of the renamed module-removal methods, listed as such
    text = describe_methods()
    for old, new in ALIASES.items():
        assert f"old name of {new}" in text and old in text
    assert text.count("not Table 3") == 3


def test_model_methods_record_identity_backend_and_dtype(tmp_path, monkeypatch):
    import torch

    _fake_infer(monkeypatch, backend="insightface")
    m = make_method("singer", checkpoint=tmp_path, dtype="bf16")
    m.check()
    fp = m.fingerprint()
    assert fp["identity_backend"] == "insightface" and fp["dtype"] == "bfloat16"
    assert m.extras()["identity_backend"] == "insightface" and m.extras()["dtype"] == "bfloat16"
    notes = m.input_notes(["c1"])
    assert any("identity_backend: insightface" in i for items in notes.values() for i in items)
    # a different backend or dtype is a different fingerprint: cached clips are not reused across them
    module = _fake_infer(monkeypatch, backend="fallback")
    other = make_method("singer", checkpoint=tmp_path, dtype="bf16")
    assert other.fingerprint()["identity_backend"] == "fallback" and other.fingerprint() != fp
    assert module.pipes[-1].args["dtype"] == torch.bfloat16
    assert make_method("singer", checkpoint=tmp_path).fingerprint()["dtype"] == "float32"


def test_model_methods_batch_clips_and_check_frames(tmp_path, monkeypatch):
    module = _fake_infer(monkeypatch)
    clips = [dataclasses.replace(_clip(tmp_path), clip_id=f"c{i}") for i in range(3)]
    m = make_method("singer", checkpoint=tmp_path, batch_clips=2)
    out = m.generate_batch(clips)
    assert [len(b[0]) for b in module.pipes[-1].batches] == [2, 1] and len(out) == 3
    with pytest.raises(UsageError, match="batch_clips"):
        make_method("singer", checkpoint=tmp_path, batch_clips=0)
    module = _fake_infer(monkeypatch, frames=np.zeros((4, 8, 8, 3), np.uint8))  # wrong length
    m = make_method("singer", checkpoint=tmp_path)
    with pytest.raises(MethodError, match="returned 4 frames"):
        m.generate(clips[0])


def test_hallo_method_warns_on_a_singer_checkpoint(tmp_path, monkeypatch, caplog):
    _fake_infer(monkeypatch, model={"preset": "tiny"})
    with caplog.at_level("WARNING", logger="benchmark.methods.singer"):
        make_method("hallo", checkpoint=tmp_path).check()
    assert "singer-minus-both" in caplog.text
    _fake_infer(monkeypatch, model={"preset": "hallo"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="benchmark.methods.singer"):
        make_method("hallo", checkpoint=tmp_path).check()
    assert "singer-minus-both" not in caplog.text


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """A config YAML standing for a tiny checkpoint (absolute paths), as the release configs do."""
    import yaml

    from singer_model.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_for_bench"))
    conf = yaml.safe_load((ckpt / "config.yaml").read_text())
    conf["weights"] = {k: str((ckpt / v).resolve()) for k, v in conf["weights"].items()}
    conf["net"] = [str((ckpt / f).resolve()) for f in conf["net"]]
    conf["inference"] = {"steps": 2, "guidance_scale": 3.5}
    path = tmp_path_factory.mktemp("configs") / "tiny_release.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_singer_from_a_config_yaml_batches_clips_like_one_at_a_time(tiny_config, shared_media, tmp_path):
    import cv2
    import torch

    from shv_toolkit.core import media

    face = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=16000)
    clips = [ClipInput(f"c{i}", face if i == 0 else np.ascontiguousarray(face[::-1]),
                       audio[i * 8000: i * 8000 + 10 * 640], 16000, 10, 25.0, tmp_path / "gt.mp4")
             for i in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = make_method("singer", checkpoint=tiny_config)
        alone = [one.generate(c) for c in clips]
        fp = one.fingerprint()
        one.close()
        two = make_method("singer", checkpoint=tiny_config, batch_clips=2)
        together = two.generate_batch(clips)
        two.close()
    finally:
        torch.set_num_threads(threads)
    assert fp["identity_backend"] == "fallback" and fp["dtype"] == "float32"  # the tiny config's backend, CPU
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape == (10, 64, 64, 3)
        d = np.abs(a.astype(int) - b.astype(int))
        assert d.max() <= 2 and d.mean() < 0.05
    assert np.abs(together[0].astype(int) - together[1].astype(int)).mean() > 5


def test_cli_hallo_from_a_config_yaml_is_one_command(sample_build, tiny_config, tmp_path):
    import json

    import pandas as pd
    import torch

    from benchmark import bench_cli

    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = bench_cli.main(["--method", "hallo", "--checkpoint", str(tiny_config), "--manifest",
                               str(sample_build[0] / "test.parquet"), "--out", str(out), "--limit", "1",
                               "--metrics", "ssim", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    board = pd.read_csv(out / "leaderboard.csv")
    row = board[board["method"] == "hallo"].iloc[0]
    assert row["n_clips"] == 1 and 0 < row["SSIM"] < 1
    assert row["driving_audio"] == "vocals"  # the release's default for the model methods
    summary = json.dumps(json.loads(next((out / "runs").glob("hallo*.json")).read_text()))
    assert "identity_backend: fallback" in summary and "variant: singer-no-both" in summary
    assert bench_cli.main(["--method", "static", "--checkpoint", str(tiny_config), "--manifest",
                           str(sample_build[0] / "test.parquet"), "--out", str(out)]) == 2


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


def test_state_names_are_the_declared_states():
    assert SSIM().state_names() == ["per_clip"]
    assert FVD().state_names() == ["n", "sum", "outer", "n_clips", "short_clips"]
    assert "per_clip" in BAS().state_names()
    # a restored one-clip state merges like the original object
    a = SSIM()
    a.per_clip = {"c1": 0.5}
    b = decode_state(fresh_shard(a), encode_state(a))
    assert b.per_clip == {"c1": 0.5} and b is not a


def test_protocol_overrides_are_named():
    p = runner.protocol_with_overrides("shv-v1", fvd_stride=16)
    assert p.name == "shv-v1[fvd_stride=16]" and p.fvd_stride == 16
    assert runner.protocol_with_overrides("shv-v1", fvd_stride=1).name == "shv-v1"
    with pytest.raises(UsageError):
        BenchConfig(method="static", manifest=Path("m"), out=Path("o"), metrics=["nope"])
