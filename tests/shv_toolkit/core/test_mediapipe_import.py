"""import_mediapipe: mediapipe without matplotlib.pyplot at import time, and matplotlib intact after it.

Each case runs in a fresh interpreter: what is already in ``sys.modules`` is the point of the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok"), proc.stdout


def test_mediapipe_imports_without_pyplot_and_matplotlib_works_afterwards():
    _run("""
        import sys, types
        from shv_toolkit.core.mediapipe_import import DeferredModule, import_mediapipe
        mp = import_mediapipe()
        assert mp is sys.modules["mediapipe"]
        assert "matplotlib" not in sys.modules and "matplotlib.pyplot" not in sys.modules
        assert "sounddevice" not in sys.modules
        mp.solutions.face_detection.FaceDetection(model_selection=0).close()
        assert import_mediapipe() is mp
        # a later import gets the real modules, not the placeholders
        import matplotlib
        import matplotlib.pyplot as plt
        assert not isinstance(matplotlib, DeferredModule) and not isinstance(plt, DeferredModule)
        assert plt.__name__ == "matplotlib.pyplot" and callable(plt.figure)
        # mediapipe's own reference forwards to the real pyplot
        deferred = mp.solutions.drawing_utils.plt
        assert isinstance(deferred, DeferredModule)
        assert deferred.figure is plt.figure
        print("ok")
    """)


def test_tasks_api_is_deferred_and_works_on_first_use():
    _run("""
        import sys
        from shv_toolkit.core.mediapipe_import import DeferredModule, import_mediapipe
        mp = import_mediapipe()
        assert isinstance(mp.tasks, DeferredModule) and "mediapipe.tasks.python" not in sys.modules
        assert not any(name.startswith("mediapipe.tasks") for name in sys.modules)
        # first use imports the real Tasks API; mp.tasks forwards to it
        options = mp.tasks.vision.FaceDetectorOptions
        import mediapipe.tasks.python as tasks
        assert not isinstance(tasks, DeferredModule) and tasks.vision.FaceDetectorOptions is options
        assert type(sys.modules["mediapipe.tasks"]).__name__ == "module"
        print("ok")
    """)


def test_placeholder_loads_the_real_module_on_first_use():
    _run("""
        import sys
        from shv_toolkit.core.mediapipe_import import import_mediapipe
        mp = import_mediapipe()
        fig = mp.solutions.drawing_utils.plt.figure()  # first use: imports the real pyplot
        assert type(sys.modules["matplotlib.pyplot"]).__name__ == "module"
        assert sys.modules["matplotlib.pyplot"].gcf() is fig
        print("ok")
    """)


def test_matplotlib_imported_first_is_left_alone():
    _run("""
        import sys
        import matplotlib
        from shv_toolkit.core.mediapipe_import import import_mediapipe
        mp = import_mediapipe()
        assert sys.modules["matplotlib"] is matplotlib
        assert "matplotlib.pyplot" not in sys.modules
        import matplotlib.pyplot as plt
        assert plt is sys.modules["matplotlib.pyplot"] and callable(plt.plot)
        assert mp.solutions.drawing_utils.plt.plot is plt.plot
        print("ok")
    """)


def test_concurrent_first_imports_all_get_the_whole_module():
    """Helper threads building their face-mesh graphs import mediapipe at the same moment (a resumed
    build reaches them first): none may see the module half initialised."""
    _run("""
        import sys, threading, time
        from shv_toolkit.core.mediapipe_import import import_mediapipe
        got, errors = [], []
        def work():
            try:
                got.append(import_mediapipe().solutions.face_mesh.FaceMesh)
            except Exception as exc:
                errors.append(repr(exc))
        first = threading.Thread(target=work)
        first.start()
        deadline = time.monotonic() + 30
        while "mediapipe" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.0005)
        # the first thread is inside mediapipe's import now: the others arrive while it runs
        assert not getattr(sys.modules["mediapipe"], "solutions", None), "import finished too soon"
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in [first, *threads]:
            t.join()
        assert not errors and len(got) == 4, errors
        print("ok")
    """)
