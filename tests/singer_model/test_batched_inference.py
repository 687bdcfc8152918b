"""Batched inference (several clips per forward, both CFG branches in one forward) gives each clip's
unbatched frames: tiny checkpoint, real face image and real singing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from shv_toolkit.core import media
from singer_model.infer import GenerationRequest, load_pipeline
from singer_model.tiny import make_tiny_checkpoint

STEPS = 3


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_batched"))


@pytest.fixture(scope="module")
def pipe(tiny_ckpt):
    p = load_pipeline(tiny_ckpt)
    yield p
    p.close()


@pytest.fixture(scope="module")
def clips(shared_media) -> list[GenerationRequest]:
    face = cv2.cvtColor(cv2.imread(str(shared_media / "obama.jpg")), cv2.COLOR_BGR2RGB)
    audio = media.read_audio(shared_media / "lena.wav", sample_rate=16000)
    # different faces (the second mirrored), audio, lengths (3 and 2 windows of 8) and seeds
    return [GenerationRequest(face, audio[: int(0.8 * 16000)], 20, seed=1),
            GenerationRequest(np.ascontiguousarray(face[:, ::-1]), audio[16000: 16000 + int(0.6 * 16000)], 13, seed=7)]


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_batched_clips_equal_each_clip_alone(pipe, clips):
    alone = [pipe.generate(c.reference_image, c.audio, c.num_frames, seed=c.seed, steps=STEPS, batch_cfg=False)
             for c in clips]
    together = pipe.generate_batch(clips, steps=STEPS)  # two clips and both CFG branches in one forward
    assert [f.shape[0] for f in together] == [20, 13]
    for a, b in zip(alone, together, strict=True):
        _close(a, b)
    # the clips differ from each other (not one clip's result copied)
    assert np.abs(together[0][:13].astype(int) - together[1].astype(int)).mean() > 5


def test_one_cfg_forward_equals_two(pipe, clips):
    c = clips[0]
    two = pipe.generate(c.reference_image, c.audio, c.num_frames, seed=c.seed, steps=STEPS, batch_cfg=False)
    one = pipe.generate(c.reference_image, c.audio, c.num_frames, seed=c.seed, steps=STEPS, batch_cfg=True)
    _close(one, two)
    # guidance matters here, so equality above is not the conditional branch alone
    cond_only = pipe.generate(c.reference_image, c.audio, c.num_frames, seed=c.seed, steps=STEPS, guidance_scale=1.0)
    assert np.abs(cond_only.astype(int) - two.astype(int)).mean() > 1


def test_batched_with_release_msm_and_drop_reference(tiny_ckpt, clips, tmp_path):
    conf = yaml.safe_load((tiny_ckpt / "config.yaml").read_text())
    conf["model"]["msm"]["condition"] = "initial_noise"
    conf["model"]["msm"]["frame_reduction"] = "sum"
    conf["weights"] = {k: str((tiny_ckpt / v).resolve()) for k, v in conf["weights"].items()}
    conf["net"] = [str((tiny_ckpt / f).resolve()) for f in conf["net"]]
    path = tmp_path / "release_msm.yaml"
    path.write_text(yaml.safe_dump(conf))
    p = load_pipeline(path)
    try:
        assert p.net.cfg.msm.condition == "initial_noise"
        for mode in ("release", "drop_reference"):
            alone = [p.generate(c.reference_image, c.audio, c.num_frames, seed=c.seed, steps=2, batch_cfg=False,
                                cfg_uncond=mode) for c in clips]
            together = p.generate_batch(clips, steps=2, cfg_uncond=mode)
            for a, b in zip(alone, together, strict=True):
                _close(a, b)
    finally:
        p.close()


def test_bf16_batched_matches_fp32(tiny_ckpt, clips):
    p = load_pipeline(tiny_ckpt, dtype=torch.bfloat16)
    try:
        c = clips[1]
        got = p.generate_batch([c], steps=2)[0]
    finally:
        p.close()
    p32 = load_pipeline(tiny_ckpt)
    try:
        ref = p32.generate_batch([c], steps=2)[0]
    finally:
        p32.close()
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - ref.astype(int)).mean() < 8


def test_compiled_denoising_gives_the_eager_frames(tiny_ckpt, pipe, clips):
    """``compile_backend`` runs the per-step denoising forward through torch.compile (a recording backend
    here: inductor's CPU build of even the tiny net takes about 2 minutes) and changes no frame."""
    graphs: list[int] = []

    def recording_backend(gm, example_inputs):
        graphs.append(len(list(gm.graph.nodes)))
        return gm.forward

    c = clips[1]
    eager = pipe.generate(c.reference_image, c.audio, 8, seed=c.seed, steps=2)
    compiled = load_pipeline(tiny_ckpt, compile_backend=recording_backend)
    try:
        got = compiled.generate(c.reference_image, c.audio, 8, seed=c.seed, steps=2)
    finally:
        compiled.close()
    assert graphs and max(graphs) > 100  # the net's forward was captured as a graph
    assert np.array_equal(got, eager)
