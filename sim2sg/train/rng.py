"""The run's torch generators, and the one place that lends them to torch's default generators.

Everything random in sim2sg takes an explicit generator, except two draws we do not own: module
initialisation (`torch.nn` layers' `reset_parameters`) and torchvision's detection heads (proposal
and ROI sampling, `BalancedPositiveNegativeSampler`), which draw from torch's process-wide default
generators and take no generator argument. `TorchRNG.scope` hands the run's state to those defaults
for the duration of a block and takes it back afterwards, so the process-wide state is unchanged
outside the block, two runs in one process do not disturb each other, and a checkpoint needs only
`TorchRNG.state_dict()`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class TorchRNG:
    """cpu: the run's CPU generator; cuda: its generator on the run's CUDA device (None on CPU
    runs). Mutable: drawing advances them."""

    cpu: torch.Generator
    cuda: torch.Generator | None = None
    _lent: bool = False  # inside `scope`: the live states are torch's defaults

    @staticmethod
    def seeded(seed: int, device: torch.device) -> "TorchRNG":
        """Generators seeded with `seed` (the same states as seeding torch's defaults with `seed`)."""
        cuda = torch.Generator(device=device).manual_seed(seed) if device.type == "cuda" else None
        return TorchRNG(torch.Generator().manual_seed(seed), cuda)

    @contextlib.contextmanager
    def scope(self):
        """Within the block, torch's default CPU (and CUDA) generators continue this run's streams;
        on exit the streams' new states come back here and the defaults are restored."""
        devices = [self.cuda.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.set_state(self.cpu.get_state())
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda.get_state(), self.cuda.device)
            self._lent = True
            try:
                yield self
            finally:
                self._lent = False
                self.cpu.set_state(torch.random.default_generator.get_state())
                if self.cuda is not None:
                    self.cuda.set_state(torch.cuda.get_rng_state(self.cuda.device))

    def state_dict(self) -> dict:
        """{"torch": CPU state (uint8 tensor), "cuda": [CUDA state] or []}: loadable with
        `torch.load(weights_only=True)`. Inside `scope` (a checkpoint written between steps) the
        live states are read from torch's defaults."""
        if self._lent:
            cuda = [torch.cuda.get_rng_state(self.cuda.device)] if self.cuda is not None else []
            return {"torch": torch.random.default_generator.get_state(), "cuda": cuda}
        return {"torch": self.cpu.get_state(), "cuda": [self.cuda.get_state()] if self.cuda is not None else []}

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()` output (also reads checkpoints of sim2sg <= 0.1, whose
        numpy and Python entries are ignored: the library draws from neither). Not inside `scope`."""
        if self._lent:
            raise RuntimeError("TorchRNG.load_state_dict inside its scope")
        self.cpu.set_state(state["torch"])
        if self.cuda is not None and state.get("cuda"):
            self.cuda.set_state(state["cuda"][0])
