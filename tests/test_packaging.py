"""A normal (non-editable) install ships the sim2sg.cli package and the scenes/assets data."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_wheel_install_has_cli_and_data(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), root], capture_output=True, text=True)
    if r.returncode != 0 and "setuptools" in r.stderr and "No module named" in r.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (target / "cli").exists() and not (target / "scenes").exists()  # nothing generic at top level
    code = ("import sim2sg, sim2sg.cli.app as a; from sim2sg.scene.environment import builtin_names; "
            "from sim2sg.scene.meshes import asset_names; print(sim2sg.__file__, builtin_names(), len(asset_names()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(target) in out.stdout and "'clevr', 'clevr-appearance'" in out.stdout and " 10" in out.stdout
