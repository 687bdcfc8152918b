"""The evaluation core shared by shv-metrics and shv-bench: one set of clip errors, missing weights
reported alike, metric state declared once (``add_state``) and merged / cached generically, and no
import cycle between the benchmark modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmark import core, runner
from benchmark.evaluate import evaluate
from benchmark.metrics import METRICS, metric_class
from benchmark.metrics.base import Clip, Metric, MetricResult, PerClipMeanMetric
from benchmark.protocol import get_protocol
from benchmark.runner import BenchConfig, run_bench
from benchmark.weights import WeightSpec, resolve
from shv_toolkit.core import media

PROTO = get_protocol("shv-v1")
ROOT = Path(__file__).resolve().parents[2]


class FailsOnB(PerClipMeanMetric):
    """Scores 1.0, except clip ``b``, where it raises a TypeError (a model crashing on one input)."""

    name: ClassVar[str] = "fails_on_b"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, protocol=None) -> None:
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        if ground_truth.clip_id == "b":
            raise TypeError("cannot score this input")
        return 1.0


class NoWeights(PerClipMeanMetric):
    """Its weight file is absent (real resolver code): missing, with the reason, in both drivers."""

    name: ClassVar[str] = "no_weights"
    higher_is_better: ClassVar[bool] = False

    def __init__(self, protocol=None) -> None:
        resolve(WeightSpec("extractor", "extractor.safetensors", "test extractor", "nowhere"),
                explicit="/nonexistent/extractor.safetensors")
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        return 0.0


class Bug(Exception):
    """Not a clip error: a bug must propagate from both drivers."""


class Buggy(PerClipMeanMetric):
    name: ClassVar[str] = "buggy"
    higher_is_better: ClassVar[bool] = True

    def __init__(self, protocol=None) -> None:
        super().__init__()

    def score(self, generated: Clip, ground_truth: Clip) -> float:
        raise Bug("a bug, not a bad clip")


@pytest.fixture
def test_metrics(monkeypatch):
    for name, cls in (("fails_on_b", "FailsOnB"), ("no_weights", "NoWeights"), ("buggy", "Buggy")):
        monkeypatch.setitem(METRICS, name, f"{__name__}:{cls}")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Three 12-frame 48x40 clips with audio and a manifest of them."""
    root = tmp_path_factory.mktemp("core")
    rng = np.random.default_rng(0)
    rows = []
    for cid in ("a", "b", "c"):
        frames = rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(int(12 / 25 * 16000))).astype(np.float32)
        media.write_video(root / f"{cid}.mp4", frames, fps=25, audio=audio, sample_rate=16000)
        rows.append({"clip_id": cid, "video_path": f"{cid}.mp4", "audio_path": None})
    pq.write_table(pa.Table.from_pylist(rows), root / "test.parquet")
    return root / "test.parquet"


# ------------------------------------------------------------------------- one set of clip errors


def test_a_clip_error_and_missing_weights_read_the_same_in_shv_metrics_and_shv_bench(manifest, tmp_path,
                                                                                       test_metrics):
    names = ["ssim", "fails_on_b", "no_weights"]
    videos = [manifest.parent / f"{c}.mp4" for c in ("a", "b", "c")]
    ev = evaluate([(v, v) for v in videos], names, PROTO, progress=False)
    bench = run_bench(BenchConfig(method="ground-truth", manifest=manifest, out=tmp_path / "out", metrics=names,
                                  progress=False, bootstrap_samples=0))
    # TypeError was a clip error of shv-bench only before the core: now of both, recorded alike
    assert ev.clip_errors == {"b": {"fails_on_b": "TypeError: cannot score this input"}}
    assert bench.failures == ev.clip_errors
    assert bench.missing == ev.missing and ev.missing["no_weights"].startswith("weights missing:")
    assert "extractor.safetensors" in ev.missing["no_weights"]
    for name in ("ssim", "fails_on_b"):
        assert bench.results[name].per_clip == pytest.approx(ev.results[name].per_clip, rel=1e-12), name
    assert ev.results["fails_on_b"].per_clip == {"a": 1.0, "c": 1.0}
    assert ev.results["no_weights"].value is None and bench.results["no_weights"].value is None
    assert bench.results["no_weights"].missing_reason == ev.results["no_weights"].missing_reason
    # the cache records the clip error under the same key, and a rerun reads it back unchanged
    cached = json.loads((tmp_path / "out" / "cache").rglob("b.json").__next__().read_text())
    assert cached["errors"] == {"fails_on_b": "TypeError: cannot score this input"}
    again = run_bench(BenchConfig(method="ground-truth", manifest=manifest, out=tmp_path / "out", metrics=names,
                                  progress=False, bootstrap_samples=0))
    assert again.failures == ev.clip_errors and again.n_cached == 3


def test_a_bug_is_not_a_clip_error_in_either_driver(manifest, tmp_path, test_metrics):
    assert not issubclass(Bug, core.CLIP_ERRORS)
    video = manifest.parent / "a.mp4"
    with pytest.raises(Bug):
        evaluate([(video, video)], ["buggy"], PROTO, progress=False)
    with pytest.raises(Bug):
        run_bench(BenchConfig(method="ground-truth", manifest=manifest, out=tmp_path / "out", metrics=["buggy"],
                              progress=False, bootstrap_samples=0))


def test_load_pair_names_the_failing_stage(manifest, tmp_path):
    video = manifest.parent / "a.mp4"
    gen, gt = core.load_pair(video, video, PROTO, "a")
    assert gen.clip_id == gt.clip_id == "a" and gen.frames.shape == gt.frames.shape
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(core.PairError) as e:
        core.load_pair(broken, video, PROTO, "a")
    assert e.value.stage == "load" and e.value.reason.startswith(type(e.value.error).__name__ + ": ")
    short = Clip(gt.frames[:5], 25.0, clip_id="a")
    with pytest.raises(core.PairError) as e:
        core.load_pair(short, video, PROTO, "a")
    assert e.value.stage == "align" and "AlignmentError" in e.value.reason


# ------------------------------------------------------------------------- declared state


def _keep_max(a: float, b: float) -> float:
    return max(a, b)


class Toy(Metric):
    """One state of every reduction."""

    name: ClassVar[str] = "toy"
    higher_is_better: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("per_clip", {}, "union")
        self.add_state("n", 0, "sum")
        self.add_state("sums", {"x": np.zeros(3), "y": np.zeros(3)}, "sum")
        self.add_state("order", [], "cat")
        self.add_state("peak", -np.inf, _keep_max)

    def update(self, generated: Clip, ground_truth: Clip) -> float:
        v = float(generated.frames.mean())
        self.per_clip[ground_truth.clip_id] = v
        self.n += 1
        self.sums["x"] = self.sums["x"] + v
        self.sums["y"] = self.sums["y"] + 2 * v
        self.order.append(ground_truth.clip_id)
        self.peak = max(self.peak, v)
        return v

    def compute(self) -> MetricResult:
        vals = self.per_clip
        return MetricResult(self.name, float(np.mean(list(vals.values()))) if vals else None, True, len(vals),
                            dict(vals))


def _clip(cid: str, level: int) -> Clip:
    return Clip(np.full((2, 8, 8, 3), level, dtype=np.uint8), clip_id=cid)


def _same(a: Metric, b: Metric) -> None:
    assert a.state_names() == b.state_names()
    for k in a.state_names():
        x, y = getattr(a, k), getattr(b, k)
        if isinstance(x, dict) and x and isinstance(next(iter(x.values())), np.ndarray):
            assert x.keys() == y.keys() and all(np.array_equal(x[i], y[i]) for i in x), k
        else:
            assert x == y, k


def test_declared_state_merges_and_caches_generically():
    one = Toy()
    shards = []
    for cid, level in (("a", 10), ("b", 200), ("c", 30)):
        one.update(_clip(cid, level), _clip(cid, level))
        shard = core.fresh_shard(Toy())
        shard.update(_clip(cid, level), _clip(cid, level))
        # through the bench's cache: encoded to JSON text and back
        text = json.dumps(core.encode_state(shard), allow_nan=False)
        shards.append(core.decode_state(core.fresh_shard(Toy()), json.loads(text)))
    merged = core.fresh_shard(Toy())
    for s in shards:
        merged.merge(s)
    _same(merged, one)
    assert merged.n == 3 and merged.order == ["a", "b", "c"] and merged.peak == 200.0
    # a clip in both shards is refused and leaves the state as it was
    before = core.encode_state(merged)
    with pytest.raises(ValueError, match="share clip ids"):
        merged.merge(shards[0])
    assert core.encode_state(merged) == before
    # reset gives fresh defaults, never shared between objects
    merged.reset()
    assert merged.per_clip == {} and merged.n == 0 and merged.order == [] and not merged.sums["x"].any()
    assert Toy().sums["x"] is not Toy().sums["x"]
    # a cached state of another layout is refused
    with pytest.raises(ValueError, match="expected"):
        core.decode_state(Toy(), {"per_clip": {}})


def test_add_state_refuses_unknown_reductions_and_redeclaration():
    t = Toy()
    with pytest.raises(ValueError, match="unknown reduction"):
        t.add_state("z", 0, "mean")
    with pytest.raises(ValueError, match="declared twice"):
        t.add_state("n", 0, "sum")


def test_every_metric_declares_its_state_and_none_is_traced():
    assert not hasattr(runner, "state_names") and not hasattr(runner, "_STATE_NAMES")
    for name in METRICS:
        cls = metric_class(name)
        # no metric re-implements reset or assigns its state there: declared state only
        for klass in cls.__mro__:
            if klass in (Metric, object) or not issubclass(klass, Metric):
                continue
            assert "reset" not in vars(klass), f"{klass.__name__} overrides reset"
    expected = {
        "ssim": ["per_clip"],
        "psnr": ["per_clip", "uncapped", "n_identical", "wrapped"],
        "cpbd": ["per_clip", "ground_truth_values"],
        "lmd": ["per_clip"],
        "bas": ["per_clip"],
    }
    for name, states in expected.items():
        assert core.build_metric(name, PROTO).state_names() == states, name
    assert core.build_metric("diversity", PROTO).state_names()[0] == "per_clip"


def test_psnr_merges_all_its_states():
    from benchmark.metrics.psnr import PSNR

    paper = get_protocol("singer-paper")
    a, b, one = PSNR(paper), PSNR(paper), PSNR(paper)
    rng = np.random.default_rng(3)
    for m, cid in ((a, "a"), (b, "b")):
        g = Clip(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), clip_id=cid)
        r = Clip(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), clip_id=cid)
        m.update(g, r)
        one.update(g, r)
    a.merge(b)
    _same(a, one)
    assert [r.value for r in a.results()] == [r.value for r in one.results()]


# ------------------------------------------------------------------------- imports


MODULES = ["benchmark.leaderboard", "benchmark.runner", "benchmark.evaluate", "benchmark.core", "benchmark.cli",
           "benchmark.bench_cli", "benchmark.metrics", "benchmark.extractors.i3d", "benchmark.extractors.syncnet"]


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any level (functions and TYPE_CHECKING blocks included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_import_cycle_between_leaderboard_runner_and_the_core():
    bench = ROOT / "benchmark"
    assert not {"benchmark.runner", "benchmark.evaluate", "benchmark.bench_cli"} & _imports(bench / "leaderboard.py")
    assert not {"benchmark.runner", "benchmark.evaluate", "benchmark.leaderboard"} & _imports(bench / "core.py")
    for path in (bench / "metrics").rglob("*.py"):
        found = {m for m in _imports(path) if m.startswith(("benchmark.runner", "benchmark.evaluate",
                                                             "benchmark.core", "benchmark.leaderboard"))}
        assert not found, (path, found)
    # the feature networks live in benchmark.extractors, not among the metrics
    assert not (bench / "metrics" / "i3d.py").exists() and not (bench / "metrics" / "syncnet.py").exists()


def test_outcome_of_one_update_is_the_same_object_both_drivers_read():
    ok = core.update_metric(FailsOnB(), _clip("a", 1), _clip("a", 1))
    bad = core.update_metric(FailsOnB(), _clip("b", 1), _clip("b", 1))
    assert ok.error is None and ok.missing is None
    assert bad.error == "TypeError: cannot score this input" and bad.missing is None
