"""Algorithm 1 of Sim2SG (synthesis-by-analysis), its ablations and baselines, in one framework.

Sim2SG (`method="sim2sg"`): start from structured domain randomization (SDR) data; then, each
iteration, predict scene graphs on the unlabelled target images, lift them to 3D (known camera, flat
ground), re-derive relations in 3D, randomize what the graphs do not fix, render on the model's
device (in memory) and train on the result. `align` picks the paper's ablations:

- "none": SDR only, no gradient reversal (the SDR baseline);
- "appearance": SDR + sigma_a (image-level domain classifier through a GRL; DA Faster R-CNN style);
- "label": the loop (sigma_c,label), no GRL;
- "label+appearance": the loop + sigma_a;
- "all": the loop + sigma_a + sigma_c,pred (domain classifier on the outputs h(z)).

GRLs stay off during a warm-up (SDR training and the first `align_from_iteration - 1` loop
iterations; for runs without the loop, the first `sdr_steps`): content is aligned first, as the
paper prescribes.

Baselines: `method="pseudo-label"` (self-training on the SDR model's confident target predictions,
mixed with SDR data) and `method="oracle"` (trained on labelled target data). Every method gets the
same number of optimizer steps.

Everything is plain functions; the run writes `metrics.json` (per phase) and `history.json` to `out`,
and per loop iteration `graphs/iterN.jsonl.gz` (`write_generated`: each target image's predicted
graph and the scene graph generated from it).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from sim2sg import atomic
from sim2sg.dataset.synthesize import (
    render_options,
    synthesize,
    texture_library,
    worker_map,
)
from sim2sg.errors import InputError
from sim2sg.loop.lift import lift_graph
from sim2sg.loop.target_look import write_target_look
from sim2sg.render.sample import Sample
from sim2sg.scene import graph as sg
from sim2sg.scene.camera import Camera
from sim2sg.scene.environment import Environment, load_env
from sim2sg.scene.sdr import sample_scene, scene_rng

METHODS = ("sim2sg", "pseudo-label", "oracle")
_TARGET_TEXTURES = "target"  # crops from the target images, under the run's texture folder
ALIGNS = ("none", "appearance", "label", "label+appearance", "all")
_MODEL_ALIGN = {"none": "none", "appearance": "appearance", "label": "none",
                "label+appearance": "appearance", "all": "both"}


@dataclass(frozen=True)
class LoopConfig:
    """One run. Sizes in pixels; steps are optimizer steps; scenes are rendered images.

    env: source environment (name or .toml). target: folder of unlabelled target images.
    eval_data: labelled target dataset (labels.json) for metrics after each phase (optional).
    target_graphs: folder of the target's true scene graphs, to measure the content gap (optional).
    oracle_data: labelled target training dataset (method "oracle").
    target_bn: whenever the model predicts on target images (the synthesis step, pseudo labels,
    the target evaluation) its BatchNorm layers use statistics re-estimated on the first
    `target_bn_images` unlabelled target images (AdaBN, `sim2sg.train.adabn`); training is
    untouched. The evaluation then also records the metrics with the training statistics
    (phase "summary_source_bn"), so one run shows what the re-estimation alone changes.
    target_textures: the synthesis step textures each lifted object with the pixels inside its
    predicted box on its target image, and the ground (road) with a rectified patch of that
    image's ground (`sim2sg.loop.target_look`), instead of the source environment's random textures:
    the generated data then carries the target's appearance as well as its content.
    keep_sdr: each iteration trains on its generated scenes together with the SDR scenes (as the
    pseudo-label baseline keeps them), so that objects a weak model misses on the target - absent
    from the scenes generated from its predictions - stay in what the network learns from.
    align_sdr_scenes: with keep_sdr, the domain classifiers (sigma_a, sigma_c,pred) see the SDR
    scenes as source images too. Off (the default), they see only the scenes generated from the
    target: the paper aligns features only once the content is aligned (end of sec. 3; 5.3), and
    the SDR scenes' content is the very gap sigma_c,label closes; D^c would learn to tell them
    from the target by their class mix, and its reversed gradient would push the predictions on
    them away from their own labels. On reproduces tables run before 2026-11-25.
    sdr_checkpoint: every method but the oracle starts with the same SDR phase (same data, same
    steps, same seed); with this path the first run saves its end state (model, optimizer, step,
    RNG states) and later runs with the same settings start from it instead of retraining it.
    warmup_checkpoint: the loop rows (label, label+appearance, all) train identically until the
    GRLs switch on at iteration `align_from_iteration`: same SDR phase, same generated scenes,
    same steps. With this path the first such run saves its state at the end of iteration
    `align_from_iteration - 1` (trainer, loop generator, history, example images and generated
    graphs) and later runs with the same settings continue from it. Besides the time, this takes
    the warm-up's run-to-run spread on the GPU out of the comparison between those rows: they then
    differ only by what the aligned iterations do (and by those iterations' own spread: up to
    0.01 mAP on the H100 unless `deterministic`).
    deterministic: on CUDA, deterministic kernels (`train.engine.make_reproducible`; slower), so
    that a row trained again from the same state repeats; on the CPU they are always on.
    """

    env: str
    target: str
    out: str
    method: str = "sim2sg"
    align: str = "all"
    iterations: int = 3
    sdr_scenes: int = 1000
    scenes_per_image: int = 1
    width: int = 256
    height: int = 256
    sdr_steps: int = 2000
    iter_steps: int = 1000
    align_from_iteration: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    lr_warmup_steps: int = 100
    backbone: str = "resnet18"
    grl_weight: float = 0.1
    grl_ramp: str = "dann"
    grl_bound: float = 0.0  # > 0: GRL gradient <= grl_bound x labelled gradient per tensor (train.engine.bounded_backward)
    score_threshold: float = 0.5
    min_fit_iou: float = 0.3  # lift gate: boxes no object of the class can project onto (sim2sg.loop.lift)
    target_bn: bool = False  # AdaBN: BatchNorm statistics of the target images whenever predicting there
    target_bn_images: int = 512
    target_textures: bool = False  # synthesis: textures cropped from the target images (sim2sg.loop.target_look)
    keep_sdr: bool = False  # iterations train on the generated scenes and the SDR scenes together
    align_sdr_scenes: bool = False  # with keep_sdr: the SDR scenes are source images of the domain losses too
    augment: str = "photometric"  # on every labelled batch of every method (sim2sg.train.augment)
    pseudo_threshold: float = 0.7
    eval_data: str | None = None
    target_graphs: str | None = None
    oracle_data: str | None = None
    keep_usd: bool = False
    sdr_checkpoint: str | None = None  # the SDR phase's end state: loaded when the file exists, else saved there
    warmup_checkpoint: str | None = None  # loop rows' state before the GRLs switch on: likewise
    render_batch: int = 256
    device: str = "auto"
    amp: bool = True
    deterministic: bool = False  # CUDA: deterministic kernels (train.engine.make_reproducible); CPU: always
    seed: int = 0
    progress: bool = True
    model: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InputError("--method", "method", f"expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.align not in ALIGNS:
            raise InputError("--align", "align", f"expected one of {', '.join(ALIGNS)}, got {self.align!r}")
        if self.method == "oracle" and not self.oracle_data:
            raise InputError("--oracle-data", "oracle_data", "the oracle needs a labelled target dataset")
        from sim2sg.train.augment import MODES

        if self.augment not in MODES:
            raise InputError("--augment", "augment", f"expected one of {', '.join(MODES)}, got {self.augment!r}")
        for name in ("iterations", "sdr_scenes", "scenes_per_image", "width", "height", "batch_size",
                     "target_bn_images"):
            if getattr(self, name) < (0 if name == "iterations" else 1):
                raise InputError(f"--{name.replace('_', '-')}", name, "out of range")
        if not self.grl_bound >= 0:
            raise InputError("--grl-bound", "grl_bound", f"must be >= 0 (0: off), got {self.grl_bound}")

    @property
    def loops(self) -> bool:
        """Whether the run does synthesis iterations (content alignment, sigma_c,label)."""
        return self.method == "sim2sg" and self.align in ("label", "label+appearance", "all")

    def total_steps(self) -> int:
        return self.sdr_steps + self.iterations * self.iter_steps


# ---- data ------------------------------------------------------------------------------------------
class SampleDataset(torch.utils.data.Dataset):
    """Rendered samples as detector training items: (image (3, H, W) float in [0, 1], target with
    boxes (N, 4) xyxy px, labels (N,) 1-based, relations (M, 3) (subject idx, object idx, predicate
    id 1-based), image_id)."""

    def __init__(self, samples: list[Sample], predicates: list[str], min_box: float = 1.0):
        self.images, self.targets = [], []
        pred_id = {p: k + 1 for k, p in enumerate(predicates)}
        for i, s in enumerate(samples):
            objs = [o for o in s.objects if o.box[2] - o.box[0] >= min_box and o.box[3] - o.box[1] >= min_box]
            index = {o.object_id: k for k, o in enumerate(objs)}
            trip = sorted({(index[a], index[b], pred_id[p]) for a, p, b in s.relations
                           if a in index and b in index and p in pred_id})
            self.images.append(torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1))
            self.targets.append({
                "boxes": torch.tensor([o.box for o in objs], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([o.category_id for o in objs], dtype=torch.int64),
                "relations": torch.tensor(trip, dtype=torch.int64).reshape(-1, 3),
                "image_id": i,
            })

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.targets[i].items()}


class LabelledOnly(torch.utils.data.Dataset):
    """`dataset`'s items with "domain_source": False in each target: they train the labelled
    losses only, never the domain classifiers (`SceneGraphRCNN.forward`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        return image, {**target, "domain_source": False}


class ListDataset(torch.utils.data.Dataset):
    """(image, target) pairs held in memory (pseudo labels)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        im, t = self.items[i]
        return im, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in t.items()}


def target_camera(env: Environment, width: int, height: int) -> Camera:
    """The known camera of the target images: the environment's nominal camera (no jitter) at the
    target image size."""
    from sim2sg.scene.sdr import sample_camera

    spec = dataclasses.replace(env.camera, position_jitter=(0.0, 0.0, 0.0), look_at_jitter=(0.0, 0.0, 0.0))
    env0 = dataclasses.replace(env, camera=spec)
    ctx = {"kind": env.context["kind"]}
    if env.context["kind"] == "road":  # the ego lane of the narrowest road the environment makes
        road = env.context["road"]
        ctx.update(lanes=road["lanes"][0], lane_width=float(np.mean(road["lane_width"])))
    return sample_camera(env0, ctx, np.random.default_rng(0)).resized(width, height)


# ---- training ------------------------------------------------------------------------------------
@dataclass
class Trainer:
    """The model, its optimizer and the step counter of a run (plain state, no hooks)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: object  # sim2sg.train.engine.TrainConfig
    device: torch.device
    step: int = 0
    total: int = 1


def make_trainer(cfg: LoopConfig, env: Environment) -> Trainer:
    from sim2sg.model import ModelConfig, build_model
    from sim2sg.train.engine import (
        TrainConfig,
        make_optimizer,
        make_reproducible,
        resolve_device,
        seed_everything,
    )

    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    make_reproducible(device, cfg.deterministic)
    mcfg = ModelConfig.from_dict(dict(num_classes=len(env.categories), num_predicates=len(env.predicates),
                                      image_size=(cfg.height, cfg.width), backbone=cfg.backbone, **cfg.model))
    model = build_model(mcfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    tcfg = TrainConfig(source="<memory>", out=cfg.out, batch_size=cfg.batch_size, lr=cfg.lr,
                       lr_warmup_steps=cfg.lr_warmup_steps, grl_weight=cfg.grl_weight, grl_ramp=cfg.grl_ramp,
                       grl_bound=cfg.grl_bound, seed=cfg.seed, device=str(device), amp=cfg.amp, augment=cfg.augment,
                       deterministic=cfg.deterministic, tensorboard=False, progress=False)
    return Trainer(model, make_optimizer(model, tcfg), tcfg, device, 0, cfg.total_steps())


def train_phase(tr: Trainer, source, target, steps: int, align: str, progress: bool = False,
                desc: str = "train") -> dict:
    """`steps` optimizer steps on `source` (paired with `target` batches when aligning); the GRL
    weight follows the run-wide schedule over tr.total steps. Returns the mean of each logged value
    over the steps that logged it."""
    from sim2sg.train.data import collate
    from sim2sg.train.engine import batch_indices, train_step

    cfg = dataclasses.replace(tr.cfg, align=align)
    tr.model.train()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    for _ in range(steps):
        idx = batch_indices(len(source), cfg.batch_size, tr.step, cfg.seed, 0)
        images, targets = collate([source[i] for i in idx])
        timgs = None
        if align != "none" and target is not None:
            tidx = batch_indices(len(target), cfg.batch_size, tr.step, cfg.seed, 1)
            timgs = [target[i][0] for i in tidx]
        logs = train_step(tr.model, tr.optimizer, (images, targets, timgs), cfg, tr.step, tr.total, tr.device)
        tr.step += 1
        for k, v in logs.items():  # per key: some (grl_scale) come from the aligned steps only
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    return {k: v / counts[k] for k, v in sums.items()}


def _sdr_key(cfg: LoopConfig) -> dict:
    """What makes two runs' SDR phases the same (the method and alignment do not: the SDR phase
    never aligns)."""
    keys = ("env", "sdr_scenes", "width", "height", "sdr_steps", "batch_size", "lr", "lr_warmup_steps",
            "backbone", "augment", "amp", "seed", "model", "render_batch")
    d = dataclasses.asdict(cfg)
    return {k: d[k] for k in keys} | {"total_steps": cfg.total_steps()} | _deterministic_key(cfg)


def _deterministic_key(cfg: LoopConfig) -> dict:
    """The checkpoint keys' entry for `deterministic`: present only when on, so that the states
    saved before the option existed keep their keys. A repeatable run must not start from a state
    that nondeterministic kernels made."""
    return {"deterministic": True} if cfg.deterministic else {}


def _save_state(tr: Trainer, path: str, key: str, **extra) -> None:
    """The trainer's state (model, optimizer, step, every RNG state) with `key` and `extra`
    entries (strings), written atomically to `path`."""
    import io

    from sim2sg.train.engine import rng_state

    buf = io.BytesIO()
    torch.save({"key": key, "model": tr.model.state_dict(), "optimizer": tr.optimizer.state_dict(),
                "step": tr.step, "rng": rng_state(), **extra}, buf)
    atomic.write_bytes(path, buf.getvalue())


def _load_state(tr: Trainer, path: Path, key: str, what: str) -> dict:
    """Restore the trainer from a `_save_state` file; returns the file's entries. A file saved
    with another `key` is an `InputError` (it would silently mix runs)."""
    from sim2sg.train.engine import set_rng_state

    # on the host: the RNG states must stay CPU tensors; load_state_dict moves the rest
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        raise InputError(path, "key", f"this {what} checkpoint was saved with other settings (env, sizes, steps, "
                                      "seed, loop options, ...); delete it or pick another path")
    tr.model.load_state_dict(state["model"])
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.step = int(state["step"])
    set_rng_state(state["rng"])
    return state


def save_sdr_phase(tr: Trainer, cfg: LoopConfig) -> None:
    """Write the trainer's state after the SDR phase to `cfg.sdr_checkpoint` (atomically)."""
    if cfg.sdr_checkpoint:
        _save_state(tr, cfg.sdr_checkpoint, json.dumps(_sdr_key(cfg), sort_keys=True))


def load_sdr_phase(tr: Trainer, cfg: LoopConfig) -> bool:
    """Restore the SDR phase's end state from `cfg.sdr_checkpoint` when it exists; False when there
    is none. A file saved with other settings is an `InputError`."""
    path = Path(cfg.sdr_checkpoint) if cfg.sdr_checkpoint else None
    if path is None or not path.is_file():
        return False
    _load_state(tr, path, json.dumps(_sdr_key(cfg), sort_keys=True), "SDR")
    return True


# What a warm-up checkpoint may not depend on: the alignment (it has not started), its GRL
# settings, and where things go.
_WARMUP_FREE = ("out", "align", "grl_weight", "grl_ramp", "grl_bound", "align_sdr_scenes", "keep_usd", "progress",
                "device", "sdr_checkpoint", "warmup_checkpoint")


def warmup_key(cfg: LoopConfig) -> str:
    """What the loop rows' warm-up depends on (`LoopConfig.warmup_checkpoint`), as a JSON string."""
    d = dataclasses.asdict(cfg)
    d.pop("deterministic")
    return json.dumps({k: v for k, v in d.items() if k not in _WARMUP_FREE} | {"total_steps": cfg.total_steps()}
                      | _deterministic_key(cfg), sort_keys=True, default=str)


def shares_warmup(cfg: LoopConfig) -> bool:
    """Whether `cfg` saves or loads `warmup_checkpoint`: a loop run with at least one iteration
    before the GRLs switch on."""
    return bool(cfg.warmup_checkpoint) and cfg.loops and 1 < cfg.align_from_iteration <= cfg.iterations + 1


def save_warmup(tr: Trainer, cfg: LoopConfig, rng: np.random.Generator, history: dict) -> None:
    """Write the loop's state at the end of iteration `align_from_iteration - 1` to
    `cfg.warmup_checkpoint` (atomically): the trainer's (as `save_sdr_phase`), the loop
    generator's, the phases recorded so far, and this run's folder (for its example images and
    generated graphs)."""
    _save_state(tr, cfg.warmup_checkpoint, warmup_key(cfg), loop_rng=json.dumps(rng.bit_generator.state),
                phases=json.dumps(history["phases"], default=_json_default), folder=str(Path(cfg.out).resolve()))


def load_warmup(tr: Trainer, cfg: LoopConfig, rng: np.random.Generator, history: dict) -> bool:
    """Continue from `cfg.warmup_checkpoint` when it exists (False when there is none): restores
    the trainer, the loop generator and the recorded phases, and copies the saving run's example
    images and generated graphs of those iterations into this run's folder. A file saved with
    other settings is an `InputError`."""
    path = Path(cfg.warmup_checkpoint)
    if not path.is_file():
        return False
    state = _load_state(tr, path, warmup_key(cfg), "warm-up")
    rng.bit_generator.state = json.loads(state["loop_rng"])
    history["phases"] = json.loads(state["phases"])
    src, out = Path(state["folder"]), Path(cfg.out)
    if src.resolve() != out.resolve():
        names = ["sdr"] + [f"iter{i}" for i in range(1, cfg.align_from_iteration)]
        for f in sorted((src / "examples").glob("*.png")):
            if f.stem.rsplit("_", 1)[0] in names:
                atomic.write_bytes(out / "examples" / f.name, f.read_bytes())
        for i in range(1, cfg.align_from_iteration):
            f = src / "graphs" / f"iter{i}.jsonl.gz"
            if f.is_file():
                atomic.write_bytes(out / "graphs" / f.name, f.read_bytes())
    atomic.write_text(out / "history.json", json.dumps(history, indent=1, default=_json_default) + "\n")
    return True


def predict_target(tr: Trainer, target, batch: int = 32, bn_images: int = 0) -> list[dict]:
    """Eval-mode model outputs (host tensors) on every target image; with `bn_images` > 0 the
    BatchNorm statistics come from the first `bn_images` target images (`target_statistics`)."""
    from sim2sg.train.engine import predict

    outs = []
    with target_statistics(tr, target, bn_images):
        for s in range(0, len(target), batch):
            outs += predict(tr.model, [target[i][0] for i in range(s, min(len(target), s + batch))], tr.device,
                            tr.cfg.amp)
    return outs


def target_statistics(tr: Trainer, target, n_images: int, batch: int = 32):
    """Context: the model's BatchNorm layers normalise with statistics of the first `n_images`
    target images (AdaBN, `sim2sg.train.adabn.target_batchnorm`; 0: unchanged). The backbone sees
    the images exactly as in `predict` (the detector's transform, autocast on CUDA)."""
    from sim2sg.train.adabn import target_batchnorm

    n = min(len(target), max(0, n_images))
    model, dev = tr.model, tr.device

    def forward(idx):
        ims = [target[i][0].to(dev) for i in idx]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=tr.cfg.amp and dev.type == "cuda"):
            il, _ = model.detector.transform(ims)
            model._backbone(il.tensors)

    return target_batchnorm(model, forward, [range(s, min(n, s + batch)) for s in range(0, n, batch)])


def save_model(tr: Trainer, cfg: LoopConfig, env: Environment, target_bn: bool, path: Path) -> None:
    """The run's current model as a `sim2sg train` checkpoint (`sim2sg eval --checkpoint` reads
    it), written atomically. `target_bn`: the caller has put the target's BatchNorm statistics in
    (`target_statistics`; what the run predicts with on the target); meta["target_batchnorm"]."""
    from sim2sg.train.engine import save_checkpoint

    meta = {"categories": list(env.categories), "predicates": list(env.predicates), "env": env.name,
            "image_size": [cfg.height, cfg.width], "target_batchnorm": target_bn, "method": cfg.method,
            "align": cfg.align}
    save_checkpoint(path, tr.model, tr.optimizer, tr.step, 0, tr.cfg, meta)


def predicted_graph(out: dict, env: Environment, camera: Camera, threshold: float) -> nx.MultiDiGraph:
    """A 2D scene graph (boxes, classes, scores; placeholder 3D) from one model output."""
    g = sg.new_graph(env.name, camera, {})
    for k, (b, c, s) in enumerate(zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist())):
        if s >= threshold:
            b = [min(max(v, 0.0), lim) for v, lim in zip(b, (camera.width, camera.height) * 2)]
            if b[2] > b[0] and b[3] > b[1]:
                sg.add_object(g, k, env.categories[int(c) - 1], (0, 0, 0), 0.0, (1, 1, 1), box=b, score=float(s))
    return g


def evaluate_on(tr: Trainer, data_dir: str | None, env: Environment) -> dict | None:
    """Metrics (sim2sg.eval) of the current model on a labelled dataset, or None."""
    if not data_dir:
        return None
    from sim2sg.train.data import LabelledDataset
    from sim2sg.train.engine import evaluate

    res = evaluate(tr.model, LabelledDataset(data_dir), tr.device, batch_size=32, amp=tr.cfg.amp,
                   categories=list(env.categories), predicates=list(env.predicates))
    return res["metrics"]


def summarize(metrics: dict | None, ks: tuple[int, ...] = (20, 50, 100)) -> dict:
    """The table columns of a metrics dict: per-class AP, mAP@0.5, and for each K in `ks` R@K
    (graph constraint), its ceiling and R@K without graph constraint (tables pick their K: 20 for
    clevr, 50 for dining and driving)."""
    if not metrics:
        return {}
    det = metrics.get("detection") or {}
    rel = metrics.get("relations") or {}
    gc, ngc = rel.get("graph_constraint") or {}, rel.get("no_graph_constraint") or {}
    ceil = (rel.get("ceiling") or {}).get("graph_constraint") or {}
    out = {"mAP@0.5": det.get("mAP@0.5"), "AP@0.5": det.get("AP@0.5", {})}
    for k in ks:
        out |= {f"R@{k}": gc.get(f"R@{k}"), f"R@{k} ceiling": ceil.get(f"R@{k}"), f"ngR@{k}": ngc.get(f"R@{k}")}
    return out


def _read_graphs(folder: str | None, env: Environment) -> list[nx.MultiDiGraph] | None:
    if not folder:
        return None
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise InputError(folder, "", "no scene-graph *.json files (--target-graphs)")
    return [sg.read_graph(p, env.categories, env.predicates) for p in files]


# ---- the run ---------------------------------------------------------------------------------------
def run(cfg: LoopConfig, log=print, sdr_only: bool = False, warmup_only: bool = False) -> dict:
    """Run `cfg`; returns {"config", "phases": [{name, steps, seconds, metrics, content_gap}], ...}
    and writes it to cfg.out/history.json (plus the last phase's metrics to metrics.json).
    sdr_only: stop after the SDR phase (to save it once to `cfg.sdr_checkpoint` for other runs);
    warmup_only: stop once `cfg.warmup_checkpoint` is saved (likewise)."""
    from sim2sg.eval.content import content_gap
    from sim2sg.train.data import ImageFolder, LabelledDataset

    cfg.validate()
    env = load_env(cfg.env)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    textures = texture_library(out)
    target = ImageFolder(cfg.target, size=(cfg.height, cfg.width), preload_bytes=2 << 30)
    true_graphs = _read_graphs(cfg.target_graphs, env)
    tr = make_trainer(cfg, env)
    options = render_options(env, cfg.width, cfg.height, seed=cfg.seed)
    model_align = _MODEL_ALIGN[cfg.align] if cfg.method == "sim2sg" else "none"
    cam = target_camera(env, cfg.width, cfg.height)
    history = {"config": dataclasses.asdict(cfg), "phases": []}
    t_run = time.perf_counter()
    bn = cfg.target_bn_images if cfg.target_bn else 0

    def record(name: str, seconds: float, extra: dict | None = None, gap: dict | None = None):
        # One re-estimation of the target statistics serves the evaluation and the saved model
        # (the statistics come from the unlabelled target images, never from the evaluation set).
        with target_statistics(tr, target, bn):
            m = evaluate_on(tr, cfg.eval_data, env)
            save_model(tr, cfg, env, bn > 0, out / "model.pt")
        phase = {"name": name, "step": tr.step, "seconds": round(seconds, 2), "metrics": m,
                 "summary": summarize(m), "content_gap": gap, **(extra or {})}
        if bn and cfg.eval_data:
            phase["summary_source_bn"] = summarize(evaluate_on(tr, cfg.eval_data, env))
        history["phases"].append(phase)
        s = phase["summary"]
        msg = f"[{name}] step {tr.step} ({seconds:.0f} s)"
        if s:
            msg += (f"  mAP@0.5 {_fmt(s['mAP@0.5'])}  R@20 {_fmt(s['R@20'])} / ceiling {_fmt(s['R@20 ceiling'])}"
                    f"  R@50 {_fmt(s['R@50'])} / {_fmt(s['R@50 ceiling'])}")
        if gap:
            msg += f"  content gap: count TV {gap['count_tv']:.3f}, position W1 {_fmt(gap['position_w1'])} m"
        if "lifted" in phase:
            msg += f"  scenes from predictions {phase['lifted']} / {phase['graphs']} (the rest SDR: nothing detected or liftable)"
        log(msg)
        atomic.write_text(out / "history.json", json.dumps(history, indent=1, default=_json_default) + "\n")

    def sdr_data(n: int, seed_offset: int = 0) -> list[Sample]:
        graphs = [sample_scene(env, scene_rng(cfg.seed + seed_offset, i)) for i in range(n)]
        if true_graphs is not None and seed_offset == 0:
            history["sdr_content_gap"] = content_gap(graphs, true_graphs, env.categories, env.predicates)
        return synthesize(graphs, [f"sdr_{i:06d}" for i in range(n)], env, options, tr.device,
                          np.random.default_rng([cfg.seed, 1]), textures, batch=cfg.render_batch,
                          keep_usd=(out / "usd" / "sdr") if cfg.keep_usd else None)

    if cfg.method == "oracle":
        t = time.perf_counter()
        data = LabelledDataset(cfg.oracle_data)
        train_phase(tr, data, None, cfg.total_steps(), "none", cfg.progress, "oracle")
        record("oracle", time.perf_counter() - t)
        return _finish(history, out, t_run)

    # Phase 0: SDR. Warm-up: no gradient reversal unless the run never loops (SDR + sigma_a).
    t = time.perf_counter()
    sdr_samples = sdr_data(cfg.sdr_scenes)
    _save_examples(out, "sdr", sdr_samples[:4])
    sdr = SampleDataset(sdr_samples, list(env.predicates))
    del sdr_samples
    rng = np.random.default_rng([cfg.seed, 2])  # the loop's: scene seeds and rendering
    # A loop row with a saved warm-up (SDR phase + the iterations before the GRLs) continues from
    # it and skips those phases (`LoopConfig.warmup_checkpoint`).
    warm = shares_warmup(cfg) and not sdr_only
    if warmup_only and not warm:
        raise ValueError("warmup_only needs a loop run with warmup_checkpoint and align_from_iteration > 1")
    resumed = warm and load_warmup(tr, cfg, rng, history)
    if resumed:
        log(f"[warm-up] continuing at iteration {cfg.align_from_iteration} from {cfg.warmup_checkpoint}")
        if warmup_only:
            return history
    else:
        # The SDR phase never aligns: content first (the paper's warm-up). A run that never loops
        # (SDR, DA) spends the loop's steps on SDR data, with its GRLs on from then on.
        if not load_sdr_phase(tr, cfg):
            train_phase(tr, sdr, target, cfg.sdr_steps, "none", cfg.progress, "sdr")
            save_sdr_phase(tr, cfg)
        record("sdr", time.perf_counter() - t, gap=history.get("sdr_content_gap"))
    if sdr_only:
        return _finish(history, out, t_run)
    if not cfg.loops and cfg.method == "sim2sg" and cfg.iterations * cfg.iter_steps > 0:
        t = time.perf_counter()
        train_phase(tr, sdr, target, cfg.iterations * cfg.iter_steps, model_align, cfg.progress, "sdr, continued")
        record("sdr (aligned)" if model_align != "none" else "sdr (continued)", time.perf_counter() - t)

    if cfg.method == "pseudo-label":
        t = time.perf_counter()
        pseudo = pseudo_labels(tr, target, cfg.pseudo_threshold, bn)
        mixed = torch.utils.data.ConcatDataset([pseudo, sdr]) if len(pseudo) else sdr
        train_phase(tr, mixed, None, cfg.iterations * cfg.iter_steps, "none", cfg.progress, "pseudo-label")
        record("pseudo-label", time.perf_counter() - t, {"pseudo_images": len(pseudo)})
        return _finish(history, out, t_run)
    if not cfg.loops:
        return _finish(history, out, t_run)

    sdr_kept = sdr if cfg.align_sdr_scenes else LabelledOnly(sdr)  # what keep_sdr adds to each iteration
    for it in range(cfg.align_from_iteration if resumed else 1, cfg.iterations + 1):
        t = time.perf_counter()
        outs = predict_target(tr, target, bn_images=bn)
        t_predict = time.perf_counter() - t
        jobs = []
        seeds = iter(rng.integers(0, 2**63 - 1, size=len(outs) * cfg.scenes_per_image).tolist())
        for k, o in enumerate(outs):
            pred = predicted_graph(o, env, cam, cfg.score_threshold)
            image = boxes = None
            if cfg.target_textures and len(pred):
                image = (target[k][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                # The ground patch keeps clear of every detection, the uncertain ones too.
                boxes = o["boxes"][o["scores"] >= min(0.3, cfg.score_threshold)].numpy()
            jobs += [(k, r, pred, image, boxes, next(seeds)) for r in range(cfg.scenes_per_image)]
        made = generate_scenes(jobs, env, cam, cfg, it, textures)
        t_generate = time.perf_counter() - t - t_predict
        graphs = [g for g, _, _ in made]
        looks = [look for _, look, _ in made]
        sources = [src for _, _, src in made]  # the target image index, -1 for an SDR fallback
        names = [f"it{it}_{k:06d}_{r}" for k, r, *_ in jobs]
        write_generated(out / "graphs" / f"iter{it}.jsonl.gz", jobs, made)
        gap = content_gap(graphs, true_graphs, env.categories, env.predicates) if true_graphs else None
        samples = synthesize(graphs, names, env, options, tr.device, rng, textures, batch=cfg.render_batch,
                             keep_usd=(out / "usd" / f"iter{it}") if cfg.keep_usd else None, target_looks=looks)
        if not cfg.keep_usd:  # the crops served this iteration's stages only
            shutil.rmtree(textures / _TARGET_TEXTURES / f"it{it}", ignore_errors=True)
        t_synth = time.perf_counter() - t
        align = model_align if it >= cfg.align_from_iteration else "none"
        generated = SampleDataset(samples, list(env.predicates))
        data = torch.utils.data.ConcatDataset([generated, sdr_kept]) if cfg.keep_sdr else generated
        means = train_phase(tr, data, target, cfg.iter_steps, align, cfg.progress, f"iteration {it}")
        # The report's examples are scenes generated from target predictions (not SDR fallbacks),
        # named with the target image each came from.
        shown = [i for i, k in enumerate(sources) if k >= 0][:4] or list(range(min(4, len(samples))))
        _save_examples(out, it, [samples[i] for i in shown])
        record(f"iteration {it}", time.perf_counter() - t,
               {"synthesis_seconds": round(t_synth, 2),
                # where it went: predicting on the target, lifting (+ crops), building and rendering
                "synthesis_split": {"predict": round(t_predict, 2), "lift": round(t_generate, 2),
                                    "render": round(t_synth - t_predict - t_generate, 2)},
                "align": align, "graphs": len(graphs),
                # mean losses over the phase's steps, GRL weight, and with --grl-bound the mean share
                # of the GRL gradient let through (grl_scale)
                "train": {k: round(v, 5) for k, v in means.items()},
                "lifted": sum(k >= 0 for k in sources), "example_targets": [sources[i] for i in shown]}, gap)
        if warm and it == cfg.align_from_iteration - 1:
            save_warmup(tr, cfg, rng, history)
            if warmup_only:
                return history
    return _finish(history, out, t_run)


def write_generated(path: Path, jobs: list, made: list) -> None:
    """One JSON line per generated scene, gzipped (same input, same bytes): {"target": index of
    the target image, "lifted": whether the scene came from its prediction (else an SDR fallback),
    "predicted": the predicted graph above the score threshold, "generated": the 3D scene graph
    (`sim2sg.scene.graph.to_dict` objects)}. So a user can see what the synthesis step made of each image."""
    lines = [json.dumps({"target": k, "lifted": src >= 0, "predicted": sg.to_dict(pred), "generated": sg.to_dict(g)},
                        sort_keys=True, default=_json_default)
             for (k, _, pred, *_), (g, _, src) in zip(jobs, made)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def generate_scenes(jobs: list, env: Environment, cam: Camera, cfg: LoopConfig, it: int, textures: Path,
                    workers: int | None = None) -> list[tuple[nx.MultiDiGraph, object, int]]:
    """The synthesis step's CPU half for each job (k, r, predicted graph, target image (H, W, 3)
    uint8 or None, (N, 4) px boxes of every detection or None, seed): lift the predicted graph to
    3D (an SDR scene when nothing can be lifted) and, with an image, crop its target textures
    (`sim2sg.loop.target_look`). Returns [(graph, TargetLook or None, k or -1 for an SDR scene)].

    Each job draws from its own generator (its seed), so the result does not depend on `workers`:
    `sim2sg.dataset.synthesize.worker_map` (forked processes; None = min(8, CPUs - 1), 0 = here).
    """
    with worker_map(len(jobs), workers) as pmap:
        return pmap(_generate_one, jobs, env, cam, (cfg.score_threshold, cfg.min_fit_iou), cfg.seed,
                    cfg.scenes_per_image, it, str(textures))


def _generate_one(job, env: Environment, cam: Camera, gates: tuple[float, float], seed: int, per_image: int,
                  it: int, textures: str):
    k, r, pred, image, boxes, job_seed = job
    rng = np.random.default_rng(job_seed)
    g = lift_graph(pred, env, cam, rng, score_threshold=gates[0], min_fit_iou=gates[1])
    if len(g) == 0:  # nothing detected (or nothing liftable): fall back to an SDR scene
        return sample_scene(env, scene_rng(seed + 1000 * it, k * per_image + r)), None, -1
    look = None
    if image is not None:
        look = write_target_look(image, g, cam, boxes, rng, Path(textures), f"{_TARGET_TEXTURES}/it{it}/{k:06d}_{r}")
    return g, look, k


def pseudo_labels(tr: Trainer, target, threshold: float, bn_images: int = 0) -> ListDataset:
    """Self-training data: target images with the model's confident detections (score >= threshold)
    and relations (predicate score >= threshold) as labels; images with no detection are skipped."""
    items = []
    for k, o in enumerate(predict_target(tr, target, bn_images=bn_images)):
        keep = (o["scores"] >= threshold).nonzero().flatten()
        if len(keep) == 0:
            continue
        remap = {int(i): n for n, i in enumerate(keep.tolist())}
        trip = set()
        for (s, ob), sc in zip(o["rel_pairs"].tolist(), o["rel_scores"]):
            if s in remap and ob in remap:
                for p in (sc[1:] >= threshold).nonzero().flatten().tolist():
                    trip.add((remap[s], remap[ob], p + 1))
        boxes = o["boxes"][keep].float()
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        if not bool(ok.all()):
            continue
        items.append((target[k][0], {"boxes": boxes, "labels": o["labels"][keep].long(),
                                     "relations": torch.tensor(sorted(trip), dtype=torch.int64).reshape(-1, 3),
                                     "image_id": k}))
    return ListDataset(items)


def _save_examples(out: Path, it, samples: list[Sample]) -> None:
    """A few rendered training images of a phase, for the report's figure."""
    import cv2

    for k, s in enumerate(samples):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        stem = it if isinstance(it, str) else f"iter{it}"
        atomic.write_bytes(out / "examples" / f"{stem}_{k}.png", buf.tobytes())


def _finish(history: dict, out: Path, t_run: float) -> dict:
    history["seconds"] = round(time.perf_counter() - t_run, 2)
    last = history["phases"][-1] if history["phases"] else {}
    history["final"] = last.get("summary", {})
    if "summary_source_bn" in last:
        history["final_source_bn"] = last["summary_source_bn"]
    atomic.write_text(out / "history.json", json.dumps(history, indent=1, default=_json_default) + "\n")
    if last.get("metrics") is not None:
        atomic.write_text(out / "metrics.json", json.dumps(last["metrics"], indent=1, default=_json_default) + "\n")
    return history


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and x != x:
        return None
    return str(x)
