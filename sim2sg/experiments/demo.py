"""`sim2sg demo`: the main job on the built-in default, end to end.

Renders the clevr-target domain (the paper's section 5.1 target: other colors, materials,
textures, counts and margins, camera post-processing), then trains the preset's rows (SDR, Sim2SG
with all alignments, the oracle on labelled target images) against its unlabelled images with
the same budget, and writes a report folder (`sim2sg.experiments.page`): `index.html` (the page
to open: table, curves, figure, self-contained), `table.md` (like the paper's Table 1, with the
share of the SDR-to-oracle gap each row closes), `curves.png` (metrics and content gap over the
iterations), `figure.png` (like Fig. 3: SDR samples, and per iteration the target images beside
the scenes generated from them) and `results.json` (every row's history).

Two presets, both with the fast network (`docs/models.md`): "small" is sized for a 2-core CPU
(about 9-15 minutes), "full" is the benchmark size for a GPU (about 8 minutes on an H100).
`benchmarks/demo_seeds.py` runs a preset over several seeds.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sim2sg import atomic
from sim2sg.device import resolve_device
from sim2sg.experiments.page import clear_report, write_report
from sim2sg.experiments.tables import (
    ROWS,
    make_domain,
    run_rows,
    slug,
    train_sdr_phase,
    train_warmup,
    warmup_path,
)
from sim2sg.loop.config import LoopConfig
from sim2sg.model import BACKBONES_OF
from sim2sg.train.align import parse_align
from sim2sg.train.checkpoint import FILE_NAME, load_checkpoint


@dataclass(frozen=True)
class Preset:
    """One size of the demo. Sizes in pixels (square images), steps are optimizer steps, scenes
    rendered images. rows: keys of `sim2sg.experiments.tables.ROWS`, in table order. The other
    fields are the `LoopConfig` settings every row runs with (see its docstring); the Sim2SG
    options (target_textures, keep_sdr, grl_bound, score_threshold, min_fit_iou) act on the loop
    rows only, target_bn on every row's predictions on the target (SDR's too)."""

    size: int
    n_target: int  # unlabelled target images (the loop's input; the oracle trains on their labels)
    n_eval: int  # labelled target images for the metrics
    n_source: int  # SDR scenes
    iterations: int
    sdr_steps: int
    iter_steps: int
    batch: int
    rows: tuple[str, ...]
    arch: str  # the network (sim2sg.model.build_model): frcnn or fast
    backbone: str = "resnet18"  # its body; a fast-only one becomes resnet18 when --model frcnn
    lr: float = 2e-3
    score_threshold: float | str = 0.5  # detections lifted in the synthesis step ("auto": sim2sg.loop.calibrate)
    min_fit_iou: float = 0.3
    target_textures: bool = True
    target_bn: bool = True
    keep_sdr: bool = False
    grl_bound: float = 0.0
    align_from_iteration: int = 2

    def with_arch(self, arch: str | None) -> "Preset":
        """This preset with network `arch` (None: its own); a body the network lacks becomes resnet18."""
        arch = arch or self.arch
        return dataclasses.replace(self, arch=arch,
                                   backbone=self.backbone if self.backbone in BACKBONES_OF[arch] else "resnet18")

    def loop_config(self, out: Path, device: str, seed: int, arch: str | None = None) -> LoopConfig:
        """The settings every row shares (`tables.row_config` adds each row's method and data)."""
        p = self.with_arch(arch)
        arch, backbone = p.arch, p.backbone
        return LoopConfig(env="clevr", target="", out="", iterations=self.iterations, sdr_scenes=self.n_source,
                          width=self.size, height=self.size, arch=arch, backbone=backbone, sdr_steps=self.sdr_steps,
                          iter_steps=self.iter_steps, batch_size=self.batch, lr=self.lr,
                          lr_warmup_steps=min(100, self.sdr_steps // 4), align_from_iteration=self.align_from_iteration,
                          device=device, seed=seed, progress=True, score_threshold=self.score_threshold,
                          min_fit_iou=self.min_fit_iou, target_textures=self.target_textures, target_bn=self.target_bn,
                          keep_sdr=self.keep_sdr, grl_bound=self.grl_bound,
                          sdr_checkpoint=str(Path(out) / "runs" / "sdr_phase.pt"))

    def describe(self) -> str:
        """One line of what the preset does, for the report."""
        return (f"{self.arch} network ({self.backbone}), {self.size}x{self.size} px, batch {self.batch}, {self.n_source} SDR scenes, "
                f"{self.n_target} unlabelled target images, {self.n_eval} labelled for evaluation; "
                f"{self.sdr_steps} SDR steps + {self.iterations} x {self.iter_steps} (every row the same "
                f"{self.sdr_steps + self.iterations * self.iter_steps} steps); Sim2SG: target textures "
                f"{_on(self.target_textures)}, target BatchNorm statistics {_on(self.target_bn)} (every row), "
                f"SDR scenes kept in its iterations {_on(self.keep_sdr)}, GRL bound "
                f"{self.grl_bound or 'off'}, GRLs from iteration {self.align_from_iteration}, lift score >= "
                f"{self.score_threshold}")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


PRESETS = {
    # The 2-core CPU: the fast network on its light body (resnet10-half: ~1/8 of ResNet-18's
    # convolutions, as accurate on held-out clevr at 64 px and 300 steps) at 80 px, 300 SDR steps +
    # 3 x 150 per row, with the loop's options that carry the target's appearance into the
    # generated scenes (target textures and BatchNorm statistics: the paper's clevr -> clevr-target
    # gap is content and appearance), the SDR scenes kept beside the generated ones (so that
    # classes the young model misses on the target are still learned), the GRL bound, and a lift
    # threshold of 0.3 (the young model's scores are low). 256 target images, so that the oracle
    # (trained on their labels) is an upper bound: with 128 at 64 px it ended below Sim2SG.
    # Measured (README "What the demo shows", one seed): 16.3 minutes on the shared CPU (load 3-6);
    # SDR 0.141 mAP@0.5, Sim2SG 0.243, oracle 0.306.
    "small": Preset(size=80, n_target=256, n_eval=48, n_source=256, iterations=3, sdr_steps=300, iter_steps=150,
                    batch=8, rows=("SDR", "all (Sim2SG)", "oracle"), arch="fast", backbone="resnet10-half",
                    score_threshold=0.3, keep_sdr=True, grl_bound=0.1),
    # A GPU: the benchmark size with the fast network on ResNet-18, lift score 0.3 as on the CPU:
    # at 0.5 the SDR-phase model lifted 2-5 of a target image's ~12 objects and the count gap rose
    # at iteration 1 (Sim2SG 0.765 mAP@0.5); at 0.3 it fell at every iteration in 3 of 3 seeds and
    # Sim2SG reached 0.848 +- 0.008 (one H100, 7 min 18 s a seed; benchmarks/RESULTS.md "Demo and CI"). With
    # Faster R-CNN (`--model frcnn`, the paper's network, more accurate at these steps) the same
    # rows are ~30 minutes of training (not run as a demo; its table setting: RESULTS "Table 1").
    "full": Preset(size=256, n_target=1000, n_eval=200, n_source=1000, iterations=3, sdr_steps=1500,
                   iter_steps=500, batch=32, rows=("SDR", "sigma_c,label", "all (Sim2SG)", "oracle"), arch="fast",
                   score_threshold=0.3),
}


def run_demo(out: Path, device: str = "auto", preset: str | Preset | None = None, seed: int = 0,
             arch: str | None = None, log=print, keep_shared: bool = False, compile: bool = False) -> Path:
    """Run the demo into `out`; returns the report folder. preset: a name of PRESETS (None:
    "full" with CUDA, else "small") or a Preset. arch: the network ("frcnn" or "fast"; None: the
    preset's). keep_shared: keep the shared SDR phase / warm-up files and the runs' resume
    points (by default they are deleted at the end, and each row keeps one model,
    RUN/checkpoint.pt, without its optimizer state). compile: `LoopConfig.compile` for every run."""
    t0 = time.perf_counter()
    dev = str(resolve_device(device))  # a bogus name or a CUDA this machine lacks: InputError on --device
    cuda = dev.startswith("cuda")
    if isinstance(preset, Preset):
        p, name = preset, "custom"
    else:
        name = preset or ("full" if cuda else "small")
        p = PRESETS[name]
    if not cuda:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(out)
    p = p.with_arch(arch)  # the network that runs, named so in the report
    base = dataclasses.replace(p.loop_config(out, dev, seed), compile=compile)
    base.validate()  # --compile with Faster R-CNN: one clear error before the target domain is rendered
    # a re-run retrains the rows the earlier report describes: were it killed, that report would
    # stay beside runs it no longer describes
    clear_report(out / "report")
    progress = Progress(plan(p, base), log)
    log(f"sim2sg demo ({name} preset, {dev}, seed {seed}): clevr -> clevr-target; {p.describe()}")
    domain = make_domain("clevr-target", out / "clevr-target", p.n_target, p.n_eval, p.size, p.size, dev,
                         seed=1000 + seed)
    progress.done("target domain rendered")
    log(f"target domain: {p.n_target} unlabelled images in {domain.train_images}, {p.n_eval} labelled in {domain.eval_data}")
    # Every row but the oracle starts from one SDR phase: cheaper, and the rows then differ only
    # by what follows it (CPU training with 2 threads is not bit-reproducible between runs).
    if any(r != "oracle" for r in p.rows):
        train_sdr_phase("clevr", domain, out / "runs", base, log=progress.log)
    base = dataclasses.replace(base, warmup_checkpoint=warmup_path(list(p.rows), "clevr", domain, out / "runs", base))
    train_warmup("clevr", domain, out / "runs", base, log=progress.log)  # the loop rows' iteration 1, once (full preset)
    results = run_rows(list(p.rows), "clevr", domain, out / "runs", base, log=progress.log)
    if not keep_shared:
        slim_outputs(out, [slug(r) for r in p.rows])
    report = write_report(out / "report", results, domain, out / "runs", p.describe(), log=log)
    progress.done("report written")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"report: {report / 'index.html'}  (table: {report / 'table.md'})")
    log(f"demo finished in {_mmss(time.perf_counter() - t0)}; {out} holds {total / 2**20:.0f} MB")
    return report


@dataclass(frozen=True)
class Costs:
    """What the demo's work costs, in optimizer steps of the preset's batch: the weights of the
    progress estimate. Per image or scene, except `aligned_step` (one step with a GRL on: the
    target batch through the encoder and the domain heads, and `--grl-bound`'s second backward,
    against 1 for a plain step)."""

    target_render: float  # a target image rendered (with the first call's imports and texture library)
    sdr_render: float  # an SDR scene rendered
    evaluate: float  # an image predicted and scored, or one of AdaBN's target images
    synthesis: float  # a target image predicted, lifted, its scene built and rendered
    aligned_step: float


# Fitted to the phase times of measured runs (benchmarks/log/2026-12-07-session5-gpu.md): the small
# preset on the 2-core CPU (batch 8) and the full one on an H100 (batch 32), where training is cheap
# beside scoring (pycocotools and recall run on the host) and rendering. An aligned step cost 2.4-2.6
# plain ones on both.
COSTS = {
    "cpu": Costs(target_render=0.4, sdr_render=0.1, evaluate=0.125, synthesis=0.175, aligned_step=2.5),
    "cuda": Costs(target_render=0.9, sdr_render=0.25, evaluate=0.45, synthesis=0.3, aligned_step=2.5),
}


def plan(p: Preset, base: LoopConfig) -> list[tuple[str, float]]:
    """The demo's phases in order, each with its expected cost in optimizer-step equivalents
    (`Costs`, by the run's device): the weights of the progress estimate. The loop logs one line
    per phase it records."""
    c = COSTS["cuda" if base.device.startswith("cuda") else "cpu"]
    evaluation = (p.n_eval + (min(p.n_target, base.target_bn_images) if p.target_bn else 0)) * c.evaluate
    synthesis = p.n_target * c.synthesis
    evaluation_sdr = evaluation + p.n_source * c.sdr_render  # a row's first phase renders its SDR scenes too
    phases = [("render the target domain", (p.n_target + p.n_eval) * c.target_render)]
    loop_rows = [r for r in p.rows if ROWS[r][0] == "sim2sg" and "label" in parse_align(ROWS[r][1], loop=True)]
    if any(r != "oracle" for r in p.rows):
        phases.append(("SDR phase (shared)", p.sdr_steps + evaluation_sdr))
    warm = len(loop_rows) > 1 and p.align_from_iteration > 1
    if warm:
        phases.append(("warm-up: SDR", evaluation_sdr))
        phases += [(f"warm-up: iteration {i}", p.iter_steps + synthesis + evaluation)
                   for i in range(1, p.align_from_iteration)]

    def iteration(row: str, i: int) -> float:
        grl = i >= p.align_from_iteration and parse_align(ROWS[row][1], loop=True) & {"appearance", "prediction"}
        return p.iter_steps * (c.aligned_step if grl else 1.0) + synthesis + evaluation

    for row in p.rows:
        if row == "oracle":
            phases.append((row, base.total_steps() + evaluation))
            continue
        if row in loop_rows:
            first = p.align_from_iteration if warm else 1
            if not warm:
                phases.append((f"{row}: SDR", evaluation_sdr))
            phases += [(f"{row}: iteration {i}", iteration(row, i)) for i in range(first, p.iterations + 1)]
        else:
            phases += [(f"{row}: SDR", evaluation_sdr), (f"{row}: continued", p.iterations * p.iter_steps + evaluation)]
    return phases + [("report", 1.0)]


_PHASE_LINE = re.compile(r"^\[[^\]]+\] step \d+ \(")  # the loop's line at the end of each phase


class Progress:
    """'phase k of n' with the elapsed time and an estimate of the time left (the weights of
    the phases still to come, at the rate measured so far). `log` passes every line on and counts
    the loop's end-of-phase lines; `done(name)` counts a phase of the driver's own."""

    def __init__(self, phases: list[tuple[str, float]], log):
        self.phases, self.out, self.k, self.t0 = phases, log, 0, time.perf_counter()

    def log(self, msg: str) -> None:
        self.out(msg)
        if _PHASE_LINE.match(msg):
            self.done()

    def done(self, name: str | None = None) -> None:
        self.k += 1
        n = max(len(self.phases), self.k)
        elapsed = time.perf_counter() - self.t0
        weights = [w for _, w in self.phases]
        spent, left = sum(weights[:self.k]), sum(weights[self.k:])
        eta = f", about {_mmss(elapsed / spent * left)} left" if spent > 0 and self.k < n else ""
        label = name or (self.phases[self.k - 1][0] if self.k <= len(self.phases) else "")
        self.out(f"-- phase {self.k} of {n} done ({label}): {_mmss(elapsed)} elapsed{eta}")


def _mmss(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def slim_outputs(out: Path, row_folders: list[str]) -> None:
    """Keep what a user of a finished demo needs: each row's model as RUN/checkpoint.pt (without
    the optimizer state and resume entries, which only a resumed run reads) and its history,
    metrics, examples and generated graphs. Deletes the shared SDR phase and warm-up files and
    folders, the rows' resume points and their texture caches."""
    runs = Path(out) / "runs"
    for f in list(runs.glob("sdr_phase.pt")) + list(runs.glob("warmup_*.pt")):
        f.unlink()
    for d in ("sdr_phase", "warmup"):
        shutil.rmtree(runs / d, ignore_errors=True)
    for name in row_folders:
        run = runs / name
        for f in ("resume.pt", "resume_step.pt"):
            (run / f).unlink(missing_ok=True)
        shutil.rmtree(run / "textures", ignore_errors=True)
        ckpt_path = run / FILE_NAME
        if ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            keep = {k: v for k, v in ckpt.items() if k in _MODEL_KEYS}
            import io

            buf = io.BytesIO()
            torch.save(keep, buf)
            atomic.write_bytes(ckpt_path, buf.getvalue())


# What `sim2sg eval` / `predict` read from a checkpoint (sim2sg.train.checkpoint).
_MODEL_KEYS = ("format", "version", "model", "step", "epoch", "config", "model_config", "meta")


__all__ = ["COSTS", "PRESETS", "Costs", "Preset", "Progress", "plan", "run_demo", "slim_outputs"]
