"""config.py: the thread settings change no output, so they stay out of the config hash."""

from __future__ import annotations

import pytest

from shv_toolkit.config import BuildConfig
from shv_toolkit.core.errors import UsageError


def test_threads_are_not_hashed_but_validated():
    base = BuildConfig()
    for threads in (0, 1, 7):
        cfg = BuildConfig.from_dict({"clips": {"threads": threads}})
        assert cfg.config_hash() == base.config_hash()
    assert BuildConfig.from_dict({"clips": {"crf": 20}}).config_hash() != base.config_hash()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(UsageError, match="clips.threads"):
            BuildConfig.from_dict({"clips": {"threads": bad}})


def test_decoder_threads_are_not_hashed_but_validated():
    assert BuildConfig.from_dict({"clips": {"decoder_threads": 2}}).config_hash() == BuildConfig().config_hash()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(UsageError, match="clips.decoder_threads"):
            BuildConfig.from_dict({"clips": {"decoder_threads": bad}})


@pytest.mark.parametrize("name", ["sample_stride", "pose_stride"])
def test_score_strides_are_hashed_and_validated(name):
    assert BuildConfig.from_dict({"filters": {name: 3}}).config_hash() != BuildConfig().config_hash()
    for bad in (0, -2, 2.5, "5", True):
        with pytest.raises(UsageError, match=f"filters.{name}"):
            BuildConfig.from_dict({"filters": {name: bad}})


def test_default_config_hash_is_stable():
    """The default config's hash is the one in the committed sample manifests: a new option whose unset
    value changes nothing must not change it (resumed builds match their markers by this hash)."""
    import pandas as pd

    from ..conftest import REPO

    committed = set(pd.read_parquet(REPO / "manifests" / "sample" / "clips.parquet")["config_hash"])
    assert committed == {BuildConfig().config_hash()}
    with_mdx = BuildConfig.from_dict({"vocals": {"backend": "mdx", "mdx_model_path": "/m/Kim_Vocal_2.onnx"}})
    assert with_mdx.config_hash() != BuildConfig().config_hash()


def test_cli_selects_the_mdx_separator():
    from shv_toolkit.cli import build_parser, config_from_args

    args = build_parser().parse_args(["--urls", "u.txt", "--out", "o", "--vocals", "mdx",
                                      "--mdx-model", "/m/Kim_Vocal_2.onnx"])
    cfg = config_from_args(args)
    assert (cfg.vocals.backend, cfg.vocals.mdx_model_path) == ("mdx", "/m/Kim_Vocal_2.onnx")
