"""Every test module under the paths pytest was given is collected.

pytest's default ``norecursedirs`` skips folders named ``build``, which silently left tests/shv_toolkit/build
out of every full run until pyproject.toml's ``norecursedirs`` dropped that name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import COLLECTED


def test_every_test_module_is_collected(request: pytest.FixtureRequest) -> None:
    config = request.config
    collected = config.stash[COLLECTED]
    expected: set[Path] = set()
    for arg in config.args:
        root = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if root.is_dir():
            expected |= {p.resolve() for p in root.rglob("test_*.py")}
        elif root.name.startswith("test_") and root.suffix == ".py":
            expected.add(root)
    assert Path(__file__).resolve() in expected  # the check below is not vacuous
    missing = sorted(str(p) for p in expected if p not in collected)
    assert not missing, f"test modules not collected: {missing}"
