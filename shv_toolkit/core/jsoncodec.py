"""The one JSON codec of the project: dataclasses, NumPy arrays and non-finite floats.

* :func:`encode` / :func:`decode`: an exact round trip (arrays as base64 bytes with dtype and shape,
  tuples, sets, dicts with any keys, dataclasses by qualified name). Used for completion markers of
  a build and for shv-bench's per-clip state caches. Only dataclasses of this project's packages are
  rebuilt; nothing is unpickled.
* :func:`to_plain`: a readable one-way form for reports (dataclasses as dicts, arrays as lists,
  non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any

import numpy as np

#: packages whose dataclasses :func:`decode` rebuilds
TRUSTED_PACKAGES = ("shv_toolkit", "benchmark", "singer_model")


def encode(x: Any) -> Any:
    """JSON-able form of ``x`` that :func:`decode` turns back into an equal value."""
    if x is None or isinstance(x, bool | str):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else {"__float__": repr(x)}
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        return {"__ndarray__": base64.b64encode(a.tobytes()).decode(), "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(x, np.generic):
        return encode(x.item())
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: encode(v) for k, v in x.items()}
        return {"__dict__": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, tuple):
        return {"__tuple__": [encode(v) for v in x]}
    if isinstance(x, set | frozenset):
        return {"__set__": [encode(v) for v in x]}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        cls = type(x)
        return {
            "__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
            "fields": {f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)},
        }
    raise TypeError(f"cannot encode a value of type {type(x).__name__} as JSON")


def _dataclass(ref: str) -> type:
    module, qual = ref.split(":")
    if not any(module == p or module.startswith(p + ".") for p in TRUSTED_PACKAGES):
        raise ValueError(f"refusing to rebuild {ref} from JSON (not a class of this project)")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"{ref} is not a dataclass")
    return obj


def decode(x: Any) -> Any:
    """The value :func:`encode` was given."""
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__float__" in x:
        return float(x["__float__"])
    if "__ndarray__" in x:
        a = np.frombuffer(base64.b64decode(x["__ndarray__"]), dtype=np.dtype(x["dtype"]))
        return a.reshape(x["shape"]).copy()
    if "__dict__" in x:
        return {_hashable(decode(k)): decode(v) for k, v in x["__dict__"]}
    if "__tuple__" in x:
        return tuple(decode(v) for v in x["__tuple__"])
    if "__set__" in x:
        return {_hashable(decode(v)) for v in x["__set__"]}
    if "__dataclass__" in x:
        inst = object.__new__(_dataclass(x["__dataclass__"]))
        for k, v in x["fields"].items():
            object.__setattr__(inst, k, decode(v))
        return inst
    if any(k.startswith("__") for k in x):
        raise ValueError(f"unknown encoded value {sorted(x)[:3]}")
    return {k: decode(v) for k, v in x.items()}


def _hashable(x: Any) -> Any:
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


def to_plain(x: Any) -> Any:
    """Readable JSON form for reports (one way): see the module docstring."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_plain(x.tolist())
    if isinstance(x, np.generic):
        return to_plain(x.item())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_plain(dataclasses.asdict(x))
    if isinstance(x, Path):
        return str(x)
    return x
