"""Import mediapipe without paying for ``matplotlib.pyplot`` and the Tasks API at import time.

``import mediapipe`` (0.10.21) imports ``matplotlib.pyplot`` for a plotting helper and the whole Tasks
API, neither used by the toolkit. :func:`import_mediapipe` imports it with :class:`DeferredModule`
placeholders for ``matplotlib``, ``matplotlib.pyplot``, ``mediapipe.tasks`` and
``mediapipe.tasks.python`` (those not imported yet) and removes them from ``sys.modules`` straight
afterwards: later imports get the real modules, and mediapipe's own references load them on first
attribute access. Import times: perf/RESULTS.md. (``importlib.util.LazyLoader`` cannot do this: the
import system reads ``__spec__`` while binding ``import a.b as c``, which loads the module at once.)
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

#: modules kept out of mediapipe's import (a package before its submodules)
DEFERRED = ("matplotlib", "matplotlib.pyplot", "mediapipe.tasks", "mediapipe.tasks.python")

_lock = threading.RLock()  # re-entered if mediapipe's import touches a placeholder


class DeferredModule(types.ModuleType):
    """Stands in for module ``name``: the first attribute it does not have imports the real module
    (``importlib.import_module``) and every attribute is then read from that."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"deferred import of {name} (see shv_toolkit.core.mediapipe_import)")
        # __spec__ stays None (set by ModuleType): the import system reads it, and must not load

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        with _lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def import_mediapipe() -> types.ModuleType:
    """``import mediapipe``, with ``matplotlib.pyplot`` and the Tasks API deferred to their first use
    (see the module docstring). Raises ImportError as ``import mediapipe`` does."""
    with _lock:
        # mediapipe may be in sys.modules but still initialising in another thread: only the import
        # statement below waits for it to finish, so it runs in every case
        first = "mediapipe" not in sys.modules
        placeholders = {name: DeferredModule(name) for name in DEFERRED if first and name not in sys.modules}
        for name, module in placeholders.items():
            parent, _, child = name.rpartition(".")
            if parent in placeholders:  # ``import matplotlib.pyplot as plt`` reads the attribute
                setattr(placeholders[parent], child, module)
        sys.modules.update(placeholders)
        try:
            import mediapipe
        finally:
            for name, module in placeholders.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
    return mediapipe
