"""What a build imports: torch only when it separates vocals (its import alone costs about 1 s)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ...conftest import REPO


def test_a_build_without_vocals_never_imports_torch(tmp_path):
    sample = REPO / "manifests" / "sample" / "input" / "single_face_lena.mp4"
    (tmp_path / "list.txt").write_text(f"{sample}\n")
    code = textwrap.dedent(f"""
        import sys
        from shv_toolkit.build import run_build
        from shv_toolkit.config import BuildConfig
        cfg = BuildConfig()
        cfg.vocals.backend = "none"
        s = run_build({str(tmp_path / 'list.txt')!r}, {str(tmp_path / 'out')!r}, cfg, progress=False)
        print(s.clips_kept, "torch" in sys.modules)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    kept, torch_loaded = res.stdout.split()[-2:]
    assert int(kept) > 0  # the build went through rendering and scoring
    assert torch_loaded == "False"
