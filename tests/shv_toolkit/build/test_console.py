"""A clean console: third-party native logging (mediapipe, TFLite, absl) goes to logs/build.log; the
console keeps the progress bars, our own warnings and the summary."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from shv_toolkit.cli import _setup_logging, native_stderr_to

from ...conftest import REPO

# what mediapipe/TFLite/absl print on fd 2 while a build creates its face detector and face mesh
NATIVE = re.compile(r"^(?:[WIEF]\d{4} \d\d:\d\d:\d\d\.\d+ |INFO: Created TensorFlow Lite|WARNING: All log messages "
                    r"before absl)|Feedback manager requires", re.M)
# a tqdm bar of the build: "sources:", "clips:", "analyse <file>:", "vocals ..." and the cursor moves between them
BAR = re.compile(r"^(?:\x1b\[A)*(?:[\w .\-]+:\s.*\[\d+:\d\d[<,].*\])?(?:\x1b\[A)*$")


def _shv_build(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("shv-build")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "shv_toolkit.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, cwd=tmp, env=env, check=False)


def test_native_logs_go_to_build_log_not_the_console(tmp_path):
    lst = tmp_path / "list.txt"
    sample = REPO / "manifests" / "sample" / "input" / "single_face_lena.mp4"
    lst.write_text(f"{sample}\n{tmp_path / 'missing.mp4'}\n")  # one good source, one that fails
    res = _shv_build(tmp_path, "--urls", str(lst), "--out", str(tmp_path / "quiet"), "--no-progress")
    assert res.returncode == 1, res.stderr  # the missing file
    log = (tmp_path / "quiet" / "logs" / "build.log").read_text()
    assert NATIVE.search(log), log[-3000:]  # the native lines are there ...
    assert not NATIVE.search(res.stderr), res.stderr  # ... and not on the console
    # the console: our own warning about the failed source, and nothing else
    lines = res.stderr.splitlines()
    assert lines and all(" WARNING shv_toolkit." in ln or " ERROR shv_toolkit." in ln for ln in lines), lines
    assert any("missing.mp4" in ln for ln in lines)
    assert "report (open in a browser):" in res.stdout and "shv-build summary" in res.stdout
    assert (tmp_path / "quiet" / "report.html").is_file()

    # with progress bars (the default): the bars and our warning share the console, no native line
    res = _shv_build(tmp_path, "--urls", str(lst), "--out", str(tmp_path / "bars"))
    assert res.returncode == 1
    assert not NATIVE.search(res.stderr), res.stderr
    assert NATIVE.search((tmp_path / "bars" / "logs" / "build.log").read_text())
    segments = [s.strip() for s in re.split(r"[\r\n]", res.stderr) if s.strip()]
    other = [s for s in segments if not BAR.match(s) and "WARNING shv_toolkit." not in s]
    assert not other, other
    assert any(s.startswith("sources:") for s in segments) and any("WARNING shv_toolkit." in s for s in segments)


def test_native_stderr_to_redirects_fd_2_and_keeps_python_on_the_console(tmp_path, capfd):
    log_path = tmp_path / "build.log"
    before = os.fstat(2)
    with native_stderr_to(log_path) as console:
        handlers = _setup_logging(tmp_path, False, console)
        try:
            os.write(2, b"E0000 native line\n")  # as C++ code writes
            print("python to stderr", file=sys.stderr)
            logging.getLogger("shv_toolkit.test").warning("our own warning")
            logging.getLogger("some_library").warning("their warning")
            logging.getLogger("some_library").error("their error")
        finally:
            for h in handlers:
                logging.getLogger().removeHandler(h)
                h.close()
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)  # fd 2 is back
    err = capfd.readouterr().err
    assert "python to stderr" in err and "our own warning" in err and "their error" in err
    assert "native line" not in err and "their warning" not in err
    text = (tmp_path / "logs" / "build.log").read_text() + log_path.read_text()
    assert "E0000 native line" in log_path.read_text()
    assert "their warning" in text and "our own warning" in text
