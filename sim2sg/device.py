"""The one device resolver: a user's `--device` string -> a `torch.device`."""

from __future__ import annotations

import torch

from sim2sg.errors import InputError


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; anything else as torch understands it
    (cpu, cuda, cuda:1, ...). A device this machine lacks is an `InputError` on "--device"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError("--device", "", f"unknown device {name!r} (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "", "CUDA requested but not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise InputError("--device", "", f"expected auto, cpu, cuda or cuda:N, got {name!r}")
    return dev
