"""MDX-Net vocals (Hallo's Kim_Vocal_2 path) against audio-separator's own output.

The fixtures in fixtures/mdx/ were made by fixtures/mdx/make_fixtures.py in scratch virtualenvs with
audio-separator 0.17.2 (Hallo's pin) and 0.47.1 (provenance.json): a small random ONNX network with
Kim_Vocal_2.onnx's signature, real singing from ../shared/media at 44.1 kHz, and the float vocals
audio-separator handed to its WAV writer (24-bit FLAC, stored within 6e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.stages.vocals_mdx import (
    HALLO_MODEL_PATH,
    MDX_RATE,
    MdxConfig,
    MdxVocals,
    as_written_pcm16,
    uvr_model_hash,
)

FIX = Path(__file__).parent / "fixtures" / "mdx"
MODEL = FIX / "tiny_mdx.onnx"
RELEASES = ("0.17.2", "0.47.1")
CASES = ("song", "lena")  # stereo song scaled to peak 0.99 (input normalised); mono solo voice at its level


def read(name: str) -> tuple[np.ndarray, int]:
    x, sr = sf.read(FIX / name, dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), sr


@pytest.fixture(scope="module")
def models() -> dict[str, MdxVocals]:
    return {r: MdxVocals(MODEL, MdxConfig(release=r), threads=1) for r in RELEASES}


@pytest.fixture(scope="module")
def outputs(models: dict[str, MdxVocals]) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for r in RELEASES:
        for c in CASES:
            x, sr = read(f"in_{c}.flac")
            out[r, c] = models[r].separate(x, sr)
    return out


def test_fixtures_are_what_provenance_says() -> None:
    prov = json.loads((FIX / "provenance.json").read_text())
    assert uvr_model_hash(MODEL) == prov["model"]["md5"]
    assert MdxConfig.from_model_data(prov["model"]["mdx_params_as_kim_vocal_2"]) == MdxConfig()
    assert set(prov["environments"]) == set(RELEASES)
    for run in prov["runs"].values():
        assert run["written_wav_equals_int16_of_vocals"], run  # the WAV holds int16(vocals * 32767)
    assert sum(p.stat().st_size for p in FIX.iterdir()) < 2 * 1024 * 1024


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("case", CASES)
def test_matches_audio_separator(outputs: dict, release: str, case: str) -> None:
    ref, sr = read(f"vocals_{case}_as{release}.flac")
    ours = outputs[release, case]
    assert sr == MDX_RATE and ours.shape == ref.shape and ours.dtype == np.float32
    peak = np.abs(ref).max()
    assert peak > 0.05
    rel = float(np.abs(ours - ref).max() / peak)
    # measured 1.4e-7 .. 4.2e-7: the 24-bit storage of the reference (6e-8 absolute), nothing more
    assert rel < 1e-6, rel
    # the int16 WAV audio-separator writes: equal but where the 24-bit rounding straddles an LSB step
    q, rq = as_written_pcm16(ours), (ref.T * 32767).astype(np.int16)
    assert np.abs(q.astype(np.int32) - rq).max() <= 1
    assert (q == rq).mean() > 0.995


def test_releases_scale_differently(outputs: dict) -> None:
    """0.17.2 multiplies the vocals by compensate and limits them to 0.9; 0.47.1 multiplies them by the
    input's peak instead: on the quiet mono voice the two differ by far more than the tolerance."""
    a, b = outputs["0.17.2", "lena"], outputs["0.47.1", "lena"]
    assert np.abs(a - b).max() / np.abs(a).max() > 0.1


def test_batch_size_and_other_rates(models: dict[str, MdxVocals], outputs: dict) -> None:
    x, sr = read("in_song.flac")
    batched = MdxVocals(MODEL, MdxConfig(batch_size=3), threads=1).separate(x, sr)
    ref = outputs["0.17.2", "song"]
    assert np.abs(batched - ref).max() < 1e-6
    mono = x.mean(0)
    y = models["0.17.2"].separate(mono[::2].copy(), sr // 2)  # 22.05 kHz in: resampled, 44.1 kHz out
    assert y.shape == (2, 2 * len(mono[::2]))
    assert np.isfinite(y).all() and np.abs(y).max() <= 0.9 + 1e-6


def test_missing_model_names_file_and_hallo_download(tmp_path: Path) -> None:
    missing = tmp_path / "pretrained_models" / "audio_separator" / "Kim_Vocal_2.onnx"
    with pytest.raises(MissingWeightsError) as err:
        MdxVocals(missing)
    msg = str(err.value)
    assert str(missing) in msg and HALLO_MODEL_PATH in msg and "fudan-generative-ai/hallo" in msg


def test_bad_model_files(tmp_path: Path) -> None:
    broken = tmp_path / "Kim_Vocal_2.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(MissingWeightsError, match="cannot load MDX-Net model"):
        MdxVocals(broken)
    with pytest.raises(MissingWeightsError, match=r"takes input .*3072, 256"):
        MdxVocals(MODEL, MdxConfig(mdx_dim_f_set=2048, mdx_n_fft_scale_set=5120))


def test_config_and_input_checks(models: dict[str, MdxVocals]) -> None:
    with pytest.raises(ValueError, match="primary_stem"):
        MdxConfig(primary_stem="Instrumental")
    with pytest.raises(ValueError, match="segment_size"):
        MdxConfig(segment_size=128)
    with pytest.raises(ValueError, match="lacks"):
        MdxConfig.from_model_data({"config_yaml": "model_2_stem_061321.yaml"})
    m = models["0.17.2"]
    with pytest.raises(ValueError, match="mono or stereo"):
        m.separate(np.zeros((3, 100), np.float32), MDX_RATE)
    with pytest.raises(ValueError, match="no audio"):
        m.separate(np.zeros((2, 0), np.float32), MDX_RATE)
    with pytest.raises(ValueError, match="non-finite"):
        m.separate(np.full((2, 10), np.nan, np.float32), MDX_RATE)


def test_make_separator_mdx_backend() -> None:
    """vocals.backend "mdx" builds the Separator whose mono 16 kHz output is audio-separator's
    (Hallo's 0.17.2) vocals averaged over both channels and resampled."""
    from shv_toolkit.config import BuildConfig, VocalsConfig
    from shv_toolkit.stages import vocals as V

    cfg = BuildConfig.from_dict({"vocals": {"backend": "mdx", "mdx_model_path": str(MODEL)}}).vocals
    sep = V.make_separator(cfg, progress=False, threads=2)
    assert isinstance(sep, V.Separator)
    assert sep.name == "mdx:tiny_mdx" and "audio-separator 0.17.2" in sep.version
    assert (sep.input_rate, sep.input_channels) == (MDX_RATE, 2)
    x, sr = read("in_song.flac")
    ours = sep.separate(x, sr)
    ref = V.resample(read("vocals_song_as0.17.2.flac")[0].mean(0), MDX_RATE, V.OUTPUT_RATE)
    assert ours.shape == (round(x.shape[1] * V.OUTPUT_RATE / sr),) and ours.dtype == np.float32
    rel = float(np.abs(ours - ref[:len(ours)]).max() / np.abs(ref).max())
    assert rel < 1e-5, rel
    assert len(sep.separate(x[:, :0], sr)) == 0
    with pytest.raises(MissingWeightsError, match="mdx_model_path"):
        V.make_separator(VocalsConfig(backend="mdx"))
