"""The loop's training side: its model, optimizer and generators (`Trainer`), one training phase
(`train_phase`, the shared step loop with the loop's in-phase resume points) and the metrics of
the current model on a labelled dataset (`evaluate_on`)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from sim2sg.loop.config import LoopConfig
from sim2sg.loop.state import save_in_phase
from sim2sg.model import ModelConfig
from sim2sg.scene.environment import Environment
from sim2sg.train.align import network_heads, parse_align
from sim2sg.train.checkpoint import restore
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import LabelledDataset, check_vocabulary
from sim2sg.train.predict import predict_labelled
from sim2sg.train.steps import TrainState, add_align_heads, new_state, train_steps


@dataclass(frozen=True)
class Trainer:
    """The loop's training side: its `TrainState` (mutable: model, optimizer, generators, step),
    the `TrainConfig` its phases train with, and the checkpoints' meta entry."""

    state: TrainState
    cfg: TrainConfig
    meta: dict


def make_trainer(cfg: LoopConfig, env: Environment) -> Trainer:
    """A fresh model and optimizer for `cfg` (the run's generators seeded with `cfg.seed`); the
    labelled data the run scores on or trains with are checked against `env`'s vocabulary first."""
    if cfg.eval_data:
        check_vocabulary(cfg.eval_data, env.categories, env.predicates, "--eval-data")
    if cfg.method == "oracle" and cfg.oracle_data:
        check_vocabulary(cfg.oracle_data, env.categories, env.predicates, "--oracle-data", exact=True)
    tcfg = TrainConfig(source="<memory>", out=cfg.out, batch_size=cfg.batch_size, lr=cfg.lr,
                       lr_warmup_steps=cfg.lr_warmup_steps, grl_weight=cfg.grl_weight, grl_ramp=cfg.grl_ramp,
                       grl_bound=cfg.grl_bound, arch=cfg.arch, seed=cfg.seed, device=cfg.device, amp=cfg.amp, augment=cfg.augment,
                       deterministic=cfg.deterministic, compile=cfg.compile, tensorboard=False, progress=False)
    mcfg = ModelConfig.from_dict(dict(num_classes=len(env.categories), num_predicates=len(env.predicates),
                                      image_size=(cfg.height, cfg.width), arch=cfg.arch, backbone=cfg.backbone,
                                      **cfg.model))
    state = new_state(tcfg, mcfg, cfg.total_steps())
    tcfg = dataclasses.replace(tcfg, device=str(state.device))
    meta = {"categories": list(env.categories), "predicates": list(env.predicates), "env": env.name,
            "image_size": [cfg.height, cfg.width], "method": cfg.method, "align": cfg.align}
    return Trainer(state, tcfg, meta)


def train_phase(tr: Trainer, source, target, steps: int, align: str, progress: bool = False,
                desc: str = "train", resume=None, log=None) -> dict:
    """`steps` optimizer steps on `source` (paired with `target` batches when `align`, a network
    mode of `train.align.model_mode`, aligns); the GRL weight follows the run-wide schedule.
    Returns the mean of each logged value over the steps that logged it.

    resume: a `PhaseResume` (the run's in-phase resume points) or None: continue from its saved
    point when it belongs to this phase, and save one every `checkpoint_every` steps. log: without
    a progress bar, a line at each quarter of the phase with the seconds so far (so that a table
    run's log shows where a phase that never finished spent its time)."""
    end = tr.state.step + steps
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    if resume is not None and resume.point is not None and resume.point["index"] == resume.index():
        restore(tr.state, resume.point["checkpoint"])  # after this phase's data were rebuilt from its start
        sums, counts = resume.point["sums"], resume.point["counts"]
        resume.point = None
    add_align_heads(tr.state, network_heads(parse_align(align, loop=False)))  # GPA, SAPNet: from their first phase

    start, t0 = tr.state.step, time.perf_counter()
    marks = {start + (end - start) * q // 4 for q in (1, 2, 3)} - {start, end} if log and not progress else set()

    def after_step(step: int, logs: dict) -> None:
        if step in marks:
            log(f"[{desc}] step {step} of {end} ({time.perf_counter() - t0:.0f} s)")
        for k, v in logs.items():  # the order of train_steps' own sums: the means repeat on resume
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        if resume is not None and step % resume.every == 0 and step < end:
            resume.save(sums, counts)

    train_steps(tr.state, dataclasses.replace(tr.cfg, align=align), source, target, end - tr.state.step,
                after_step=after_step, progress=desc if progress else None)
    return {k: v / counts[k] for k, v in sums.items()}


@dataclass
class PhaseResume:
    """A run's in-phase resume points: where to continue (`point`, from `load_resume`) and how to
    save the next one (phase index = phases recorded so far)."""

    tr: Trainer
    cfg: LoopConfig
    history: dict
    every: int
    point: dict | None = None

    def index(self) -> int:
        return len(self.history["phases"])

    def save(self, sums: dict, counts: dict) -> None:
        save_in_phase(self.tr.state, self.tr.cfg, self.tr.meta, self.cfg, self.index(), sums, counts)


def evaluate_on(tr: Trainer, data_dir: str | None, env: Environment) -> dict | None:
    """Metrics (sim2sg.eval) of the current model on a labelled dataset, or None."""
    if not data_dir:
        return None
    res = predict_labelled(tr.state.model, LabelledDataset(data_dir), tr.state.device, batch_size=32,
                           amp=tr.cfg.amp, categories=list(env.categories), predicates=list(env.predicates))
    return res["metrics"]
