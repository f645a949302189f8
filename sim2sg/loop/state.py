"""Saved loop states: the SDR phase and the loop rows' warm-up, saved once and continued by every
row of a table with the same settings (`LoopConfig.sdr_checkpoint`, `LoopConfig.warmup_checkpoint`),
and a run's own resume points (`sim2sg loop --resume`).

All are `sim2sg.train.checkpoint` files (the one format) with a "key" entry: the JSON of the
settings the saved state depends on. Loading a file saved with another key is an `InputError`: it
would silently mix runs.

Resume (bit-exact on the CPU, like `sim2sg train --resume`). A run keeps two resume points:
- at the end of every phase, `RUN/checkpoint.pt` (with `target_bn`: `RUN/resume.pt`, since
  checkpoint.pt then holds the target's BatchNorm statistics) with three more entries: the loop
  generator, the history (the phases done) and the settings' key. Phase k+1's data are a pure
  function of it: SDR scenes of the seed, predictions of this model on the target, scenes
  generated and rendered with this generator.
- `RUN/resume_step.pt`, written every `checkpoint_every` optimizer steps inside a phase: the
  training state (model, optimizer, step, torch generators), the phase's index and its running
  sums of the logged values.
Resuming restores the phase-end point, skips the phases done, rebuilds the next phase's data
exactly as the unbroken run did (its predictions come from the model at the phase's start, which
is why that state is kept apart from the in-phase one), then, when `resume_step.pt` belongs to
that phase, continues its training from there. The batch of step s is a pure function of (seed,
s), so the rest of the run repeats. Killed while a phase-end point is written, the previous one
stays (atomic writes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sim2sg import atomic
from sim2sg.errors import InputError
from sim2sg.loop.config import LoopConfig
from sim2sg.train.checkpoint import FILE_NAME, load_checkpoint, restore, save_checkpoint

# Meta-Sim's settings shape only its own runs: other runs' keys stay those saved before they existed.
METASIM_FIELDS = ("metasim_steps", "metasim_batch", "metasim_lr", "metasim_delta", "metasim_images")
# What a warm-up checkpoint may not depend on: the alignment (it has not started), its GRL
# settings, and where things go.
_WARMUP_FREE = ("out", "align", "grl_weight", "grl_ramp", "grl_bound", "align_sdr_scenes", "keep_usd", "progress",
                "device", "compile", "sdr_checkpoint", "warmup_checkpoint", "checkpoint_every", *METASIM_FIELDS)
# What a run may change when resumed: where and how it shows progress, when it saves, and how it
# computes (device; compile, which leaves the state dict as it is). Keys saved before `compile`
# existed stay valid.
_RESUME_FREE = ("out", "progress", "device", "compile", "checkpoint_every", "keep_usd")
RESUME_FILE = "resume.pt"
RESUME_STEP_FILE = "resume_step.pt"


def _deterministic_key(cfg: LoopConfig) -> dict:
    """The keys' entry for `deterministic`: present only when on, so that the states saved before
    the option existed keep their keys. A repeatable run must not start from a state that
    nondeterministic kernels made."""
    return {"deterministic": True} if cfg.deterministic else {}


def _arch_key(cfg: LoopConfig) -> dict:
    """The keys' entry for the network: present only for another network than Faster R-CNN, so
    that the states saved before `--model` existed keep their keys."""
    return {"arch": cfg.arch} if cfg.arch != "frcnn" else {}


def sdr_key(cfg: LoopConfig) -> str:
    """What makes two runs' SDR phases the same (the method and alignment do not: the SDR phase
    never aligns), as a JSON string."""
    keys = ("env", "sdr_scenes", "width", "height", "sdr_steps", "batch_size", "lr", "lr_warmup_steps",
            "backbone", "augment", "amp", "seed", "model", "render_batch")
    d = dataclasses.asdict(cfg)
    return json.dumps({k: d[k] for k in keys} | {"total_steps": cfg.total_steps()} | _deterministic_key(cfg)
                      | _arch_key(cfg), sort_keys=True)


def warmup_key(cfg: LoopConfig) -> str:
    """What the loop rows' warm-up depends on (`LoopConfig.warmup_checkpoint`), as a JSON string."""
    d = dataclasses.asdict(cfg)
    d.pop("deterministic")
    d.pop("arch")
    if d.get("target_camera") is None:
        d.pop("target_camera", None)  # keeps the keys of warm-ups saved before the option existed
    return json.dumps({k: v for k, v in d.items() if k not in _WARMUP_FREE} | {"total_steps": cfg.total_steps()}
                      | _deterministic_key(cfg) | _arch_key(cfg), sort_keys=True, default=str)


def shares_warmup(cfg: LoopConfig) -> bool:
    """Whether `cfg` saves or loads `warmup_checkpoint`: a loop run with at least one iteration
    before the GRLs switch on."""
    return bool(cfg.warmup_checkpoint) and cfg.loops and 1 < cfg.align_from_iteration <= cfg.iterations + 1


def _load(state, path: Path, key: str, what: str) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt.get("key") != key:
        raise InputError(path, "key", f"this {what} checkpoint was saved with other settings "
                                      f"({key_difference(ckpt.get('key'), key)}); "
                                      + ("resume with the run's own options, or start a new run in another --out"
                                         if what == "resume" else "delete it or pick another path"))
    restore(state, ckpt)
    return ckpt


def key_difference(saved, key: str, most: int = 4) -> str:
    """The settings two keys (JSON objects) differ in, as "iterations 1, now 2; lr ..." (the
    first `most`), for the message that refuses a state saved with other settings."""
    if saved is None:
        return "it records none: not a loop's state"
    try:
        old, new = json.loads(saved), json.loads(key)
        assert isinstance(old, dict) and isinstance(new, dict)
    except (TypeError, ValueError, AssertionError):
        return "env, sizes, steps, seed, loop options, ..."
    diff = [f"{k} {old.get(k, '(unset)')}, now {new.get(k, '(unset)')}" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)]
    return "; ".join(diff[:most]) + (f"; and {len(diff) - most} more" if len(diff) > most else "")


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


# ---- a run's own resume points -------------------------------------------------------------------
def resume_key(cfg: LoopConfig) -> str:
    """What a resumed run must share with the run it continues (all but `_RESUME_FREE`), as JSON."""
    d = dataclasses.asdict(cfg)
    free = _RESUME_FREE + (METASIM_FIELDS if cfg.method != "metasim" else ())
    return json.dumps({k: v for k, v in d.items() if k not in free}, sort_keys=True, default=str)


def phase_end_file(cfg: LoopConfig) -> Path:
    """Where a phase's end state goes: the run's checkpoint.pt, or resume.pt with `target_bn`
    (checkpoint.pt then holds the target's BatchNorm statistics, not the trained ones)."""
    return Path(cfg.out) / (RESUME_FILE if cfg.target_bn else FILE_NAME)


def save_phase_end(state, tcfg, meta: dict, cfg: LoopConfig, rng: np.random.Generator, history: dict,
                   json_default) -> None:
    """The state after a phase (atomically, `phase_end_file`); the in-phase file of that phase is
    then stale and removed."""
    out = Path(cfg.out)
    save_checkpoint(phase_end_file(cfg), state, tcfg, meta, key=resume_key(cfg),
                    loop_rng=json.dumps(rng.bit_generator.state), history=json.dumps(history, default=json_default))
    (out / RESUME_STEP_FILE).unlink(missing_ok=True)


def save_in_phase(state, tcfg, meta: dict, cfg: LoopConfig, phase: int, sums: dict, counts: dict) -> None:
    """`RUN/resume_step.pt`: the training state inside phase number `phase` (0-based, the index of
    the phase in history["phases"]) and the running sums of its logged values."""
    save_checkpoint(Path(cfg.out) / RESUME_STEP_FILE, state, tcfg, meta, key=resume_key(cfg),
                    phase=json.dumps({"index": phase, "sums": sums, "counts": counts}))


def load_resume(state, cfg: LoopConfig, rng: np.random.Generator, history: dict) -> dict | None:
    """Restore the last finished phase from `RUN/resume.pt` into `state`, `rng` and `history` (when
    there is one) and return the in-phase point to continue from, if any: {"index", "sums",
    "counts", "checkpoint"} (restore its checkpoint once the phase's data are rebuilt). `InputError`
    when the run has nothing saved or was made with other settings."""
    out = Path(cfg.out)
    ends, inside = phase_end_file(cfg), out / RESUME_STEP_FILE
    if not ends.is_file() and not inside.is_file():
        raise InputError(out, "", f"nothing to resume: no {ends.name} or {inside.name} in this run folder "
                                  "(drop --resume to start)")
    key = resume_key(cfg)
    if ends.is_file():
        ckpt = _load(state, ends, key, "resume")
        try:
            rng.bit_generator.state = json.loads(ckpt["loop_rng"])
            history.clear()
            history.update(json.loads(ckpt["history"]))
        except (KeyError, TypeError, ValueError):
            raise InputError(ends, "history", "not a loop's resume point (no loop generator or history)") from None
    if not inside.is_file():
        return None
    step = load_checkpoint(inside)
    if step.get("key") != key:
        raise InputError(inside, "key", f"this resume checkpoint was saved with other settings "
                                        f"({key_difference(step.get('key'), key)}); resume with the run's own options")
    try:
        phase = json.loads(step["phase"])
        index, sums, counts = int(phase["index"]), dict(phase["sums"]), dict(phase["counts"])
    except (KeyError, TypeError, ValueError):
        raise InputError(inside, "phase", "not a loop resume file") from None
    if index != len(history.get("phases", [])):
        return None  # saved in a phase that has since finished (resume.pt is newer)
    return {"index": index, "sums": sums, "counts": counts, "checkpoint": step}


def check_new_run(out: str | Path) -> None:
    """`InputError` when `out` holds a loop run (its history, checkpoint or resume points): a new
    run there would replace its checkpoint and leave its later iterations' graphs/ and examples/
    beside the new run's."""
    out = Path(out)
    for name in ("history.json", FILE_NAME, RESUME_FILE, RESUME_STEP_FILE):
        if (out / name).is_file():
            raise InputError(out / name, "", "this folder holds a loop run already: pass --resume to continue it, "
                                             "or choose another --out (or delete this folder first)")
