"""Session-wide fixtures. Real media comes from ../shared/media (CI always has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHV_SHARED_DIR", REPO.parent / "shared"))
#: every collected test's file, before -k / -m deselect any (tests/test_collection.py)
COLLECTED = pytest.StashKey[set[Path]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[COLLECTED] = {Path(item.path).resolve() for item in items}


@pytest.fixture(scope="session")
def shared_media() -> Path:
    media = SHARED / "media"
    if not (media / "README.md").is_file():
        # not a skip: CI always has ../shared, so its absence is a broken checkout
        raise RuntimeError(f"real test media not found at {media}; set SHV_SHARED_DIR")
    return media


@pytest.fixture(scope="session")
def checkpoint_keys() -> Path:
    keys = SHARED / "checkpoint-keys"
    if not (keys / "README.md").is_file():
        raise RuntimeError(f"checkpoint key references not found at {keys}; set SHV_SHARED_DIR")
    return keys


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory):
    """The bundled real sample built once per session with default settings: (out_dir, summary)."""
    from shv_toolkit.build import run_build
    from shv_toolkit.config import BuildConfig

    out = tmp_path_factory.mktemp("sample_build")
    summary = run_build(REPO / "manifests" / "sample" / "urls.txt", out, BuildConfig(), progress=False)
    return out, summary
