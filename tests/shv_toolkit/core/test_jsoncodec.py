"""The project's JSON codec: exact round trips, only project dataclasses rebuilt, readable reports."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from benchmark.metrics.lmd import LMDValue
from shv_toolkit.core.jsoncodec import decode, encode, to_plain
from shv_toolkit.stages.clips import ClipSpec


@dataclass
class _Local:
    x: int


def _round_trip(value):
    return decode(json.loads(json.dumps(encode(value), allow_nan=False)))


def test_round_trip_of_mixed_values():
    value = {
        "a": [1, 2.5, float("inf"), float("nan"), None, True, "s"],
        3: (np.arange(6, dtype=np.float64).reshape(2, 3), np.int64(7)),
        "dc": LMDValue(1.5, 2.5, 10, 0),
        "set": {1, 2},
    }
    back = _round_trip(value)
    assert back["a"][:3] == [1, 2.5, float("inf")] and np.isnan(back["a"][3]) and back["a"][4:] == [None, True, "s"]
    assert np.array_equal(back[3][0], value[3][0]) and back[3][0].dtype == np.float64 and back[3][1] == 7
    assert back["dc"] == value["dc"] and back["set"] == {1, 2}


def test_clip_spec_arrays_keep_exact_bits():
    rng = np.random.default_rng(0)
    spec = ClipSpec("c", "s", 0, 1, 10, 60, rng.normal(size=(50, 3)), rng.random(50) > 0.5,
                    rng.normal(size=50).astype(np.float32), np.full(50, np.nan), 0.125, False, "pad")
    back = _round_trip(spec)
    assert isinstance(back, ClipSpec)
    for name in ("boxes", "detected", "face_side_px", "other_face_ratio"):
        a, b = getattr(spec, name), getattr(back, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert (back.clip_id, back.crop_ok, back.crop_reason, back.pad_fraction) == ("c", False, "pad", 0.125)


def test_dict_keys_that_look_like_markers_survive():
    value = {"__float__": 1, "plain": {"x": 1}}
    assert _round_trip(value) == value


def test_foreign_classes_are_refused():
    with pytest.raises(ValueError, match="not a class of this project"):
        decode(encode(_Local(1)))
    with pytest.raises(TypeError):
        encode(object())


def test_to_plain_is_readable_json():
    out = to_plain({"v": [math.nan, math.inf, -math.inf], "a": np.arange(3), "dc": LMDValue(1.0, 2.0, 3, 0)})
    json.dumps(out, allow_nan=False)
    assert out["v"] == ["nan", "inf", "-inf"] and out["a"] == [0, 1, 2] and out["dc"]["n_frames"] == 3
