"""Method registry, the singer interface, external checks, and the runner's JSON state codec."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from benchmark import runner
from benchmark.core import decode_state, encode_state, fresh_shard
from benchmark.methods import METHODS, describe_methods, make_method, register
from benchmark.methods.base import ClipInput, Method, MethodError, MethodUnavailableError, MissingVideoError
from benchmark.methods.singer import ALIASES, VARIANTS, Singer, SingerUnavailableError, load_infer_module
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


class _CountingSinger(Singer):
    """``singer`` that records every ``generate_batch`` call (clips per call) and the frames it returned."""

    name = "test-singer-counting"
    summary = "singer, counting its batches (test)"
    calls: ClassVar[list[int]] = []
    frames: ClassVar[dict[str, np.ndarray]] = {}

    def generate_batch(self, clips: list[ClipInput]) -> list[np.ndarray]:
        type(self).calls.append(len(clips))
        out = super().generate_batch(clips)
        type(self).frames.update({c.clip_id: f for c, f in zip(clips, out, strict=True)})
        return out


def test_cli_batch_clips_gives_the_same_clips_and_the_method_columns(sample_build, tiny_config, tmp_path):
    """shv-bench --batch-clips 3 hands the tiny SINGER the three test clips in one generate_batch call; every
    clip's frames and SSIM equal those of --batch-clips 1 (one clip per call) up to float summation order.
    The row carries the identity backend and dtype actually used; a ground-truth row leaves them empty."""
    import pandas as pd
    import torch

    from benchmark import bench_cli
    from benchmark.leaderboard import META, METHOD_COLUMNS

    manifest = sample_build[0] / "test.parquet"
    register(_CountingSinger)
    runs: dict[int, tuple[list[int], dict[str, np.ndarray], pd.DataFrame]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in (1, 3):
            _CountingSinger.calls, _CountingSinger.frames = [], {}
            out = tmp_path / f"batch{batch}"
            code = bench_cli.main(["--method", _CountingSinger.name, "--checkpoint", str(tiny_config),
                                   "--manifest", str(manifest), "--out", str(out), "--metrics", "ssim",
                                   "--batch-clips", str(batch), "--no-progress", "--bootstrap", "0"])
            assert code == 0
            runs[batch] = (_CountingSinger.calls, _CountingSinger.frames, pd.read_parquet(out / "per_clip.parquet"))
        assert bench_cli.main(["--method", "ground-truth", "--manifest", str(manifest), "--out",
                               str(tmp_path / "batch3"), "--metrics", "ssim", "--limit", "1", "--no-progress",
                               "--bootstrap", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
        METHODS.pop(_CountingSinger.name)
    (calls1, frames1, clips1), (calls3, frames3, clips3) = runs[1], runs[3]
    assert calls1 == [1, 1, 1] and calls3 == [3]
    assert list(frames1) == list(frames3) and len(frames1) == 3
    for cid, a in frames1.items():
        b = frames3[cid]
        assert a.shape == b.shape and a.shape[0] == 50
        d = np.abs(a.astype(int) - b.astype(int))
        assert d.max() <= 2 and d.mean() < 0.05, cid
    assert list(clips1["clip_id"]) == list(clips3["clip_id"]) and (clips3["status"] == "ok").all()
    np.testing.assert_allclose(clips3["ssim"].to_numpy(), clips1["ssim"].to_numpy(), atol=2e-3)

    csv = tmp_path / "batch3" / "leaderboard.csv"
    header = csv.read_text().splitlines()[0].split(",")
    assert header[-len(META) - len(METHOD_COLUMNS):] == META + METHOD_COLUMNS  # new columns after the old ones
    board = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index("method")
    assert board.loc[_CountingSinger.name, "identity_backend"] == "fallback"  # the tiny config's backend
    assert board.loc[_CountingSinger.name, "dtype"] == "float32"  # auto on CPU
    assert board.loc["ground-truth", "identity_backend"] == "" and board.loc["ground-truth", "dtype"] == ""
    assert bench_cli.main(["--method", "static", "--manifest", str(manifest), "--out", str(tmp_path / "x"),
                           "--batch-clips", "0"]) == 2


class _OneBadClip(Method):
    """Frames for every clip but ``bad``; a batch holding ``bad`` raises as a whole."""

    name = "test-one-bad-clip"
    summary = "fails on one clip (test)"
    log: ClassVar[list[tuple[str, list[str]]]] = []

    def generate(self, clip: ClipInput) -> np.ndarray:
        type(self).log.append(("generate", [clip.clip_id]))
        if clip.clip_id == self.options["bad"]:
            raise RuntimeError(f"cannot generate {clip.clip_id}")
        return np.repeat(clip.reference_image[None], clip.num_frames, axis=0)

    def generate_batch(self, clips: list[ClipInput]) -> list[np.ndarray]:
        type(self).log.append(("batch", [c.clip_id for c in clips]))
        if any(c.clip_id == self.options["bad"] for c in clips):
            raise RuntimeError("a clip of the batch failed")
        return [np.repeat(c.reference_image[None], c.num_frames, axis=0) for c in clips]


def test_a_failing_clip_in_a_batch_fails_only_itself(sample_build, tmp_path):
    items = read_clips(sample_build[0] / "test.parquet")
    ids = [it.clip_id for it in items]
    bad = ids[1]
    register(_OneBadClip)
    try:
        cfg = BenchConfig(method=_OneBadClip.name, manifest=sample_build[0] / "test.parquet", out=tmp_path,
                          metrics=["ssim"], method_options={"bad": bad, "batch_clips": 3}, progress=False,
                          bootstrap_samples=0)
        _OneBadClip.log = []
        res = run_bench(cfg)
        # one batch of the three clips, which raised; then each clip alone: only the bad one failed
        assert _OneBadClip.log == [("batch", ids)] + [("generate", [c]) for c in ids]
        assert res.failures == {bad: {"generate": f"RuntimeError: cannot generate {bad}"}}
        assert [r["clip_id"] for r in res.records] == ids
        good = [r for r in res.records if r["clip_id"] != bad]
        assert all(not r["errors"] and r["metrics"]["ssim"]["values"]["ssim"] > 0.5 for r in good)
        assert res.row["n_scored"] == 2 and res.row["identity_backend"] is None and res.row["dtype"] is None
        # a rerun retrying the error regenerates only the bad clip (the others come from the cache)
        _OneBadClip.log = []
        res2 = run_bench(dataclasses.replace(cfg, retry_errors=True))
        assert _OneBadClip.log == [("generate", [bad])]
        assert res2.n_cached == 2 and res2.failures == res.failures
    finally:
        METHODS.pop(_OneBadClip.name)


def test_batches_on_worker_processes_give_the_same_row(sample_build, tmp_path):
    """Groups of batch_clips clips as engine tasks (two local workers) score like one clip at a time here."""
    manifest = sample_build[0] / "test.parquet"
    seq = run_bench(BenchConfig(method="static", manifest=manifest, out=tmp_path / "seq", metrics=["ssim"],
                                progress=False, bootstrap_samples=0))
    par = run_bench(BenchConfig(method="static", manifest=manifest, out=tmp_path / "par", metrics=["ssim"],
                                method_options={"batch_clips": 2}, workers=2, progress=False, bootstrap_samples=0))
    assert [r["clip_id"] for r in par.records] == [r["clip_id"] for r in seq.records]
    assert par.row["SSIM"] == pytest.approx(seq.row["SSIM"], rel=1e-12) and par.n_computed == 3


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


def test_model_methods_take_batch_clips_as_every_method_does():
    from benchmark.methods.singer import Singer

    assert Singer(batch_clips=None).batch_clips == 1 and Singer(batch_clips=3).batch_clips == 3
    with pytest.raises(UsageError, match="batch_clips must be >= 1"):
        Singer(batch_clips=0)


def test_release_configs_separate_the_song_with_kim_vocal_2(tmp_path, shared_media, monkeypatch):
    """A checkpoint config naming ``weights.vocal_separator`` is driven with the song, whose vocals the method
    separates (MDX-Net) before the net, as Hallo's and SINGER's inference do; without one: the vocals stem."""
    from benchmark.methods.singer import vocal_separator_path
    from shv_toolkit.core import media
    from shv_toolkit.stages.vocals_mdx import MdxSeparator

    from ..conftest import REPO

    for name in ("hallo", "singer"):  # the shipped release configs name Hallo's download path
        path = vocal_separator_path(REPO / "singer_model" / "configs" / f"{name}_release.yaml")
        assert path == REPO / "pretrained_models" / "audio_separator" / "Kim_Vocal_2.onnx"
    onnx = REPO / "tests" / "shv_toolkit" / "fixtures" / "mdx" / "tiny_mdx.onnx"
    module = _fake_infer(monkeypatch)
    module.checkpoint_config = lambda ckpt: ({"model": {}, "weights": {"vocal_separator": str(onnx)}},
                                             Path(ckpt).parent)
    config = tmp_path / "release.yaml"
    config.write_text("model: {}\n")
    assert make_method("hallo").default_driving_audio(config) == "mix"
    song = media.read_audio(shared_media / "lena.wav", sample_rate=16000, end=0.2)
    n = len(song) // 640
    clip = dataclasses.replace(_clip(tmp_path, n), audio=song[: n * 640])
    m = make_method("hallo", checkpoint=config)
    m.check()
    m.generate(clip)
    (requests, _, _), = module.pipes[-1].batches
    want = MdxSeparator(onnx).separate(clip.audio, 16000)
    assert np.array_equal(requests[0].audio, want) and not np.allclose(want, clip.audio)
    assert m.fingerprint()["vocal_separator"].startswith("mdx:tiny_mdx")
    # its file missing: the method is unavailable, naming the file
    module.checkpoint_config = lambda ckpt: ({"weights": {"vocal_separator": "gone/Kim_Vocal_2.onnx"}},
                                             Path(ckpt).parent)
    with pytest.raises(SingerUnavailableError, match="Kim_Vocal_2.onnx"):
        make_method("hallo", checkpoint=config).check()
    # no separator in the config: the manifest's vocals stem, passed as it is
    module.checkpoint_config = lambda ckpt: ({"model": {}}, Path(ckpt).parent)
    assert make_method("hallo").default_driving_audio(config) == "vocals"
    m = make_method("hallo", checkpoint=config)
    m.generate(clip)
    assert module.pipes[-1].batches[0][0][0].audio is clip.audio


def test_compile_reaches_the_pipeline(tmp_path, monkeypatch):
    from benchmark import bench_cli

    module = _fake_infer(monkeypatch)
    plain = module.load_pipeline
    seen: list[dict] = []

    def load_pipeline(checkpoint, variant, device, dtype, **kw):
        seen.append(kw)
        return plain(checkpoint, variant, device, dtype)

    module.load_pipeline = load_pipeline
    make_method("singer", checkpoint=tmp_path, compile="inductor").check()
    make_method("singer", checkpoint=tmp_path).check()
    assert seen == [{"compile_backend": "inductor"}, {}]
    assert bench_cli.main(["--method", "static", "--compile", "--manifest", str(tmp_path / "m.parquet"),
                           "--out", str(tmp_path / "o")]) == 2
