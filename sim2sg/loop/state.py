"""Shared phases: the SDR phase and the loop rows' warm-up, saved once and continued by every row
of a table with the same settings (`LoopConfig.sdr_checkpoint`, `LoopConfig.warmup_checkpoint`).

Both are `sim2sg.train.checkpoint` files (the one format) with a "key" entry: the JSON of the
settings the saved state depends on. Loading a file saved with another key is an `InputError`: it
would silently mix runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sim2sg import atomic
from sim2sg.errors import InputError
from sim2sg.loop.config import LoopConfig
from sim2sg.train.checkpoint import load_checkpoint, restore, save_checkpoint

# What a warm-up checkpoint may not depend on: the alignment (it has not started), its GRL
# settings, and where things go.
_WARMUP_FREE = ("out", "align", "grl_weight", "grl_ramp", "grl_bound", "align_sdr_scenes", "keep_usd", "progress",
                "device", "sdr_checkpoint", "warmup_checkpoint")


def _deterministic_key(cfg: LoopConfig) -> dict:
    """The keys' entry for `deterministic`: present only when on, so that the states saved before
    the option existed keep their keys. A repeatable run must not start from a state that
    nondeterministic kernels made."""
    return {"deterministic": True} if cfg.deterministic else {}


def sdr_key(cfg: LoopConfig) -> str:
    """What makes two runs' SDR phases the same (the method and alignment do not: the SDR phase
    never aligns), as a JSON string."""
    keys = ("env", "sdr_scenes", "width", "height", "sdr_steps", "batch_size", "lr", "lr_warmup_steps",
            "backbone", "augment", "amp", "seed", "model", "render_batch")
    d = dataclasses.asdict(cfg)
    return json.dumps({k: d[k] for k in keys} | {"total_steps": cfg.total_steps()} | _deterministic_key(cfg),
                      sort_keys=True)


def warmup_key(cfg: LoopConfig) -> str:
    """What the loop rows' warm-up depends on (`LoopConfig.warmup_checkpoint`), as a JSON string."""
    d = dataclasses.asdict(cfg)
    d.pop("deterministic")
    if d.get("target_camera") is None:
        d.pop("target_camera", None)  # keeps the keys of warm-ups saved before the option existed
    return json.dumps({k: v for k, v in d.items() if k not in _WARMUP_FREE} | {"total_steps": cfg.total_steps()}
                      | _deterministic_key(cfg), sort_keys=True, default=str)


def shares_warmup(cfg: LoopConfig) -> bool:
    """Whether `cfg` saves or loads `warmup_checkpoint`: a loop run with at least one iteration
    before the GRLs switch on."""
    return bool(cfg.warmup_checkpoint) and cfg.loops and 1 < cfg.align_from_iteration <= cfg.iterations + 1


def _load(state, path: Path, key: str, what: str) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt.get("key") != key:
        raise InputError(path, "key", f"this {what} checkpoint was saved with other settings (env, sizes, steps, "
                                      "seed, loop options, ...); delete it or pick another path")
    restore(state, ckpt)
    return ckpt


def save_sdr_phase(state, tcfg, meta: dict, cfg: LoopConfig) -> None:
    """Write the state after the SDR phase to `cfg.sdr_checkpoint` (atomically), if set."""
    if cfg.sdr_checkpoint:
        save_checkpoint(cfg.sdr_checkpoint, state, tcfg, meta, key=sdr_key(cfg))


def load_sdr_phase(state, cfg: LoopConfig) -> bool:
    """Restore the SDR phase's end state from `cfg.sdr_checkpoint` when it exists; False when there
    is none."""
    path = Path(cfg.sdr_checkpoint) if cfg.sdr_checkpoint else None
    if path is None or not path.is_file():
        return False
    _load(state, path, sdr_key(cfg), "SDR")
    return True


def save_warmup(state, tcfg, meta: dict, cfg: LoopConfig, rng: np.random.Generator, history: dict,
                json_default) -> None:
    """Write the loop's state at the end of iteration `align_from_iteration - 1` to
    `cfg.warmup_checkpoint` (atomically): the training state, the loop generator's, the phases
    recorded so far, and this run's folder (for its example images and generated graphs)."""
    save_checkpoint(cfg.warmup_checkpoint, state, tcfg, meta, key=warmup_key(cfg),
                    loop_rng=json.dumps(rng.bit_generator.state),
                    phases=json.dumps(history["phases"], default=json_default), folder=str(Path(cfg.out).resolve()))


def load_warmup(state, cfg: LoopConfig, rng: np.random.Generator, history: dict) -> bool:
    """Continue from `cfg.warmup_checkpoint` when it exists (False when there is none): restores
    the training state, the loop generator and the recorded phases, and copies the saving run's
    example images and generated graphs of those iterations into this run's folder."""
    path = Path(cfg.warmup_checkpoint)
    if not path.is_file():
        return False
    ckpt = _load(state, path, warmup_key(cfg), "warm-up")
    rng.bit_generator.state = json.loads(ckpt["loop_rng"])
    history["phases"] = json.loads(ckpt["phases"])
    src, out = Path(ckpt["folder"]), Path(cfg.out)
    if src.resolve() != out.resolve():
        names = ["sdr"] + [f"iter{i}" for i in range(1, cfg.align_from_iteration)]
        for f in sorted((src / "examples").glob("*.png")):
            if f.stem.rsplit("_", 1)[0] in names:
                atomic.write_bytes(out / "examples" / f.name, f.read_bytes())
        for i in range(1, cfg.align_from_iteration):
            f = src / "graphs" / f"iter{i}.jsonl.gz"
            if f.is_file():
                atomic.write_bytes(out / "graphs" / f.name, f.read_bytes())
    return True
