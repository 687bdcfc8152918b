"""Benchmark methods: the registry behind ``shv-bench --method NAME``.

Adding a method is one small class in a module of this package (or anywhere, imported before use)::

    from benchmark.methods import register
    from benchmark.methods.base import ClipInput, Method

    @register
    class Mirror(Method):
        name = "mirror"
        summary = "the reference frame mirrored, repeated"

        def generate(self, clip: ClipInput):
            return np.repeat(clip.reference_image[None, :, ::-1], clip.num_frames, axis=0)

See :mod:`benchmark.methods.base` for what a method receives and returns.
"""

from __future__ import annotations

from typing import Any

from benchmark.methods.base import (
    ClipInput,
    Method,
    MethodError,
    MethodUnavailableError,
    MissingVideoError,
)
from shv_toolkit.core.errors import UsageError

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not getattr(cls, "summary", None):
        raise TypeError(f"{cls.__name__}: a method needs class attributes name and summary")
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"method name {name!r} is already registered by {METHODS[name].__name__}")
    METHODS[name] = cls
    return cls


def make_method(name: str, /, **options: Any) -> Method:
    """Instantiate method ``name`` with command-line options (``None`` values are dropped)."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r}; known: {', '.join(METHODS)} (see --list-methods)") from None
    return cls(**{k: v for k, v in options.items() if v is not None})


def describe_methods() -> str:
    """The text of ``shv-bench --list-methods``."""
    width = max(len(n) for n in METHODS)
    lines = []
    for n, cls in METHODS.items():
        lines.append(f"  {n:<{width}}  {cls.summary}")
        if cls.usage:
            lines.append(f"  {'':<{width}}  options: {cls.usage}")
    return "\n".join(lines)


# built-in methods register themselves on import (singer imports singer_model only when it runs)
from benchmark.methods import ground_truth, static, external, singer  # noqa: E402, F401, I001

__all__ = [
    "METHODS",
    "ClipInput",
    "Method",
    "MethodError",
    "MethodUnavailableError",
    "MissingVideoError",
    "describe_methods",
    "make_method",
    "register",
]
