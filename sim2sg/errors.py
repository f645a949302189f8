"""The one error type that user-facing input problems raise.

Every bad input (a graph file, an environment file, a stage, a dataset) is reported as one
`InputError` naming the file and the field, so the CLI can print a single clear line instead of a
traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: `source` is the file (or a description of it), `field` the offending field.

    `field` uses a dotted/indexed path such as ``objects[3].size``; empty when the whole file is bad.
    """

    def __init__(self, source: str | Path | None, field: str, message: str):
        self.source = str(source) if source is not None else "<input>"
        self.field = field
        self.message = message
        where = f"{self.source}: {field}: " if field else f"{self.source}: "
        super().__init__(where + message)


class DivergedError(FloatingPointError):
    """A training run whose loss went non-finite: its settings (the learning rate, most often), not
    bad input nor a bug. `step` is the 1-based optimizer step whose loss was non-finite (its update
    was not applied); `losses` the loss values logged for it."""

    def __init__(self, step: int, losses: dict[str, float], hint: str = "try a lower --lr"):
        self.step = step
        self.losses = dict(losses)
        parts = ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items())
        super().__init__(f"training diverged at step {step}: loss is not finite ({parts}); {hint}")
