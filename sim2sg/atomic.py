"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader (or a crash) never sees a half-written file, and an existing file is replaced only once
its successor is complete. The file gets the mode a plain `open(path, "w")` would give it
(0666 minus the umask, e.g. 0644 with umask 022), not `mkstemp`'s private 0600, so datasets and
checkpoints are as readable by the user's group as any other file they write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else by
    setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a newly created regular file under the current umask."""
    return 0o666 & ~current_umask()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (same directory temp file + os.replace), mode per umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def temp_path_for(path: str | Path) -> Path:
    """A fresh temporary path beside `path` with the same suffix (mode per umask), for writers that
    need a filename (e.g. USD's layer export); the caller renames it onto `path` with `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, file_mode())
    os.close(fd)
    return Path(tmp)
