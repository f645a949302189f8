"""Locate the data folders shipped with sim2sg (`scenes/`, `assets/`), never from the cwd.

A normal install puts them inside the package (`site-packages/sim2sg/scenes`, mapped by
pyproject's package-dir); an editable install leaves them at the repository root beside `sim2sg/`.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Path of the shipped data folder `name` ("scenes" or "assets")."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"sim2sg data folder {name!r} not found beside {_PKG}")
