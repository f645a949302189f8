"""The renderer works without USD: importing it must not import pxr."""

from __future__ import annotations

import subprocess
import sys


def test_renderer_imports_without_pxr():
    code = ("import sys; sys.modules['pxr'] = None; "
            "import sim2sg.render, sim2sg.render.pipeline, sim2sg.render.batch, sim2sg.render.settings")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
