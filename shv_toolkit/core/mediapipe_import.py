"""Import mediapipe without paying for ``matplotlib.pyplot`` and the Tasks API at import time.

``import mediapipe`` (0.10.21) runs ``mediapipe/python/solutions/drawing_utils.py``, whose first lines
``import matplotlib.pyplot as plt`` for one plotting helper (``plot_landmarks``) that the toolkit never
calls: 0.31-0.33 s of mediapipe's 0.47-0.54 s import on this machine (``python -X importtime``; numpy
and OpenCV already loaded), paid by every build process before its first frame is analysed. It also
imports the whole Tasks API (``mediapipe.tasks.python``: vision, text and audio tasks, the audio ones
loading PortAudio through ``sounddevice``) although the toolkit uses only the legacy solutions.

:func:`import_mediapipe` imports mediapipe with :class:`DeferredModule` placeholders standing in for
``matplotlib``, ``matplotlib.pyplot``, ``mediapipe.tasks`` and ``mediapipe.tasks.python`` (only when
mediapipe is not imported yet, and only for those not imported yet) and removes the placeholders from
``sys.modules`` straight afterwards, so any later ``import matplotlib.pyplot`` or
``import mediapipe.tasks.python`` gets the real module. mediapipe's ``drawing_utils.plt`` and
``mediapipe.tasks`` keep the placeholder, which imports the real module on its first attribute access
and forwards to it: ``plot_landmarks`` and ``mp.tasks.vision`` still work. mediapipe then imports in
0.07-0.10 s instead of 0.47-0.54 s (0.15-0.16 s with the Tasks API; three fresh processes each).

``importlib.util.LazyLoader`` cannot do this: the import system reads the module's ``__spec__`` while
binding ``import a.b as c``, which makes a lazy module load at once.
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
