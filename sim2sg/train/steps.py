"""The one training step loop, used by plain training (`fit`) and by the Sim2SG loop's phases.

    state = new_state(cfg, model_cfg)                  # model, optimizer, generators, step 0
    means = train_steps(state, cfg, source, target, 500)

Exact resume: the batch of optimizer step s is a pure function of (seed, s) (`batch_indices`), and
the run's randomness lives in `state.rng` (`sim2sg.train.rng`), so a run resumed from a checkpoint
continues the same sequence as an unbroken run (bit-for-bit on the CPU; on CUDA up to the
nondeterminism of some kernels unless `deterministic`).

Losses: the detector's (RPN objectness + box, ROI classification + box), the relation head's
multi-label BCE, and when aligning, D^a's (eq. 3, `loss_domain_image`) and D^c's (eq. 4,
`loss_domain_pred`) behind gradient reversal with weight lambda = `grl_schedule(step, ...)`.
During the first `align_warmup_steps` steps lambda = 0 and target images are not used at all.
`grl_bound` > 0 bounds what the GRLs may do to the network, tensor by tensor (`bounded_backward`):
under Adam, lambda alone does not (see that function).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from sim2sg.device import resolve_device
from sim2sg.errors import DivergedError, InputError
from sim2sg.model import ModelConfig, build_model, grl_schedule
from sim2sg.train import distributed
from sim2sg.train.align import model_mode, parse_align
from sim2sg.train.augment import augment_images
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import collate
from sim2sg.train.rng import TorchRNG

# The alignment losses (weighted by domain_loss_weight, bounded by grl_bound) and the modules
# that only they train: Sim2SG's D^a and D^c, GPA's adaptation layers, SAPNet's discriminators.
DOMAIN_LOSSES = ("loss_domain_image", "loss_domain_pred", "loss_gpa_rpn", "loss_gpa_rcnn", "loss_domain_sap")
DOMAIN_HEADS = ("domain_image", "domain_objects", "domain_predicates", "gpa", "sapnet")  # SceneGraphRCNN's
# torch.compile's backend for `TrainConfig.compile`. Inductor generates fused kernels (C++ on the
# CPU, Triton on CUDA); tests set the cheaper "aot_eager", which traces the same graphs.
COMPILE_BACKEND = "inductor"


@dataclass
class TrainState:
    """What a run trains (plain state, no hooks): the model, its optimizer, the device, the run's
    generators and the optimizer steps done. `total`: the run's total steps (the learning-rate and
    GRL schedules span them, across the loop's phases too)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    rng: TorchRNG
    step: int = 0
    total: int = 1


def new_state(cfg: TrainConfig, model_cfg: ModelConfig, total: int = 1) -> TrainState:
    """A fresh model (initialised from the run's generators, seeded with `cfg.seed`) and optimizer
    on `cfg.device`, channels-last on CUDA, its dense pass compiled when `cfg.compile`
    (`SceneGraphCenterNet.compile_dense`: the state dict is unchanged, so checkpoints restore
    into it and load without it)."""
    device = resolve_device(cfg.device)
    make_reproducible(device, cfg.deterministic)
    rng = TorchRNG.seeded(cfg.seed, device)
    with rng.scope():
        model = build_model(model_cfg).to(device)
    rng = distributed.per_rank_rng(rng, cfg.seed, device)  # under torchrun: same weights, own draws
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if cfg.compile:  # after the move and the memory format: the graphs are traced for them
        model.compile_dense(COMPILE_BACKEND)
    return TrainState(model, make_optimizer(model, cfg), device, rng, 0, total)


def add_align_heads(state: TrainState, names) -> None:
    """Give the network the alignment heads `names` it lacks (`sim2sg.model.sgg.BASELINE_MODES`:
    built only for runs that use them, so that other checkpoints keep their keys), initialised
    from the run's generators, on its device, and their parameters to the optimizer as two more
    groups (with and without weight decay, as `make_optimizer`). A checkpoint of a network with
    heads is restored into one after this (`sim2sg.train.checkpoint.restore` calls it)."""
    names = tuple(names)
    if not names:
        return
    with state.rng.scope():
        new = state.model.add_align_heads(names)
    params = []
    for m in new:
        m.to(state.device)
        if getattr(state.model, "channels_last", False):
            m.to(memory_format=torch.channels_last)
        if distributed.active():  # the ranks' generators differ: rank 0's initialisation for all
            for t in m.state_dict().values():
                torch.distributed.broadcast(t, 0)
        params += [p for p in m.parameters() if p.requires_grad]
    if params:
        decay = state.optimizer.param_groups[0].get("weight_decay", 0.0)
        state.optimizer.add_param_group({"params": [p for p in params if p.ndim > 1], "weight_decay": decay})
        state.optimizer.add_param_group({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})


def make_reproducible(device: torch.device, deterministic: bool = False) -> None:
    """Deterministic algorithms (`torch.use_deterministic_algorithms(True, warn_only=True)`)
    when asked, and always on the CPU: there, with 2+ threads, some default kernel accumulates in
    a thread-dependent order, and identical 12-step trainings ended with most weights different
    (bit-identical with 1 thread, or with this switch, at no measurable cost). On CUDA it stays
    opt-in (`deterministic`): deterministic kernels there are slower and some only warn. Without
    it, one loop row trained twice from the same state on the H100 differed by up to 0.01 mAP
    (benchmarks/RESULTS.md)."""
    if deterministic and device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; it reads this when its handle is
        # made, so it must be set before the first matrix product (a user's own value wins).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)



def batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> list[int]:
    """Dataset indices of the batch of optimizer step `step` (0-based) for a dataset of `n` items.

    Each epoch of len = max(1, n // batch) steps is a fresh permutation drawn from a generator
    seeded by (seed, stream, epoch); a trailing partial batch is dropped (BatchNorm dislikes tiny
    batches), and n < batch gives the whole dataset each step. `stream` separates source (0) and
    target (1) orders. Pure function: the data order needs no state in checkpoints.
    """
    spe = max(1, n // batch)
    epoch, k = divmod(step, spe)
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream, epoch]).generate_state(1)[0]))
    perm = torch.randperm(n, generator=g)
    return perm[k * batch:(k + 1) * batch].tolist()


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of steps [start, stop) as given by `batch_indices` (a DataLoader batch_sampler)."""

    def __init__(self, n: int, batch: int, seed: int, stream: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.stream, self.start, self.stop = n, batch, seed, stream, start, stop

    def __iter__(self):
        for s in range(self.start, self.stop):
            yield distributed.local_slice(batch_indices(self.n, self.batch, s, self.seed, self.stream))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up over `lr_warmup_steps`, then cosine from lr to min_lr_ratio * lr."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    span = max(1, total_steps - cfg.lr_warmup_steps)
    t = min(1.0, (step - cfg.lr_warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    if targets is not None:
        targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets



# ---- one step, one epoch --------------------------------------------------------------------------
def train_step(model, optimizer, batch, cfg: TrainConfig, step: int, total_steps: int, device) -> dict[str, float]:
    """One optimizer step on `batch` = (source images, targets, target images or None).
    Returns {loss name: value, "loss": total, "lr": .., "grl_lambda": ..}."""
    images, targets, target_images = batch
    lr = lr_at(step, cfg, total_steps)
    for g in optimizer.param_groups:
        g["lr"] = lr
    mode = model_mode(parse_align(cfg.align, loop=False))
    lam = grl_schedule(step, total_steps, cfg.grl_weight, cfg.align_warmup_steps, cfg.grl_ramp) if mode != "none" else 0.0
    use_target = target_images is not None and lam > 0.0
    images, targets = to_device(images, targets, device)
    images = augment_images(images, cfg.augment, (cfg.seed, step))
    if use_target:
        target_images, _ = to_device(target_images, None, device)
    amp = cfg.amp and device.type == "cuda"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        losses = model(images, targets, target_images if use_target else None, mode, lam)
    total = sum((cfg.domain_loss_weight if k in DOMAIN_LOSSES else 1.0) * v for k, v in losses.items())
    optimizer.zero_grad(set_to_none=True)
    domain = [cfg.domain_loss_weight * v for k, v in losses.items() if k in DOMAIN_LOSSES]
    scale = None
    if cfg.grl_bound > 0 and domain:
        labelled = sum(v for k, v in losses.items() if k not in DOMAIN_LOSSES)
        scale = bounded_backward(model, labelled, sum(domain), cfg.grl_bound, cfg.grad_clip, len(images))
    else:
        total.backward()
        distributed.sync_grads(model.parameters(), len(images))  # under torchrun (sim2sg.train.distributed)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    # One host sync a step, after the backward pass is queued: every logged loss at once (the
    # finiteness check must still come before the update).
    names = list(losses)
    values = torch.stack([total.detach().float(), *(losses[k].detach().float() for k in names)]).tolist()
    if not math.isfinite(values[0]):  # `step` steps are done: this is step + 1 (its update is not applied)
        raise DivergedError(step + 1, {"loss": values[0], **dict(zip(names, values[1:]))})
    optimizer.step()
    distributed.broadcast_buffers(model)
    out = dict(zip(names, values[1:]))
    if scale is not None:
        out["grl_scale"] = scale
    out.update(loss=values[0], lr=lr, grl_lambda=lam)
    return distributed.mean_logs(out, device)


def domain_head_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(network parameters, domain-classifier parameters), those that require gradients."""
    net, heads = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (heads if name.split(".")[0] in DOMAIN_HEADS else net).append(p)
    return net, heads


def bounded_backward(model: torch.nn.Module, labelled: torch.Tensor, domain: torch.Tensor, bound: float,
                     clip: float, count: int = 1) -> float:
    """Fill `.grad` for one aligned step with the adversarial gradient bounded tensor by tensor.

    For each network tensor W, with g_l the gradient of the `labelled` losses and g_d the gradient
    the `domain` losses send back through the GRLs: grad W = g_l + s g_d, s = min(1, bound ||g_l|| /
    ||g_d||). The network is clipped to norm `clip` (as without alignment) and the domain
    classifiers (their own, unreversed gradients) apart, to `clip` too; clip <= 0: no clipping.
    Returns the mean s over the network tensors that get a GRL gradient. count: this process's
    images (under torchrun g_l and g_d are averaged over the ranks, weighted by it, before s).

    Why: Adam divides each element's step by that element's own gradient scale, so wherever g_d
    dominates g_l - the FPN levels the labelled losses barely use - the GRL term moves W at the
    full learning rate whatever lambda is, and rewrites features the detector's heads share.
    Bounded, the GRL term stays a perturbation of the labelled step on every tensor. And with the
    classifiers clipped apart, their gradients (tens of times the network's) no longer shrink
    the network's labelled step through one global clip. Costs a second backward pass.
    """
    net, heads = domain_head_parameters(model)
    g_l = torch.autograd.grad(labelled, net, retain_graph=True, allow_unused=True)
    g_l = distributed.reduce_tensors(list(g_l), net, count)
    domain.backward()
    distributed.sync_grads(net + heads, count)
    scales = []
    with torch.no_grad():
        for p, gl in zip(net, g_l):
            gd = p.grad
            if gl is None:
                # only the GRLs reach this tensor: bound ||g_l|| = 0, so it gets no gradient
                p.grad = None
                continue
            if gd is None:
                p.grad = gl
                continue
            s = (bound * gl.float().norm() / gd.float().norm().clamp(min=1e-30)).clamp(max=1.0)
            p.grad = gl + gd * s.to(gd.dtype)
            scales.append(s)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net, clip)
            torch.nn.utils.clip_grad_norm_(heads, clip)
    return float(torch.stack(scales).mean()) if scales else 1.0




def step_batches(source, target, cfg: TrainConfig, start: int, stop: int, workers: int = 0, pin: bool = False):
    """Yield (images, targets, target images or None) for optimizer steps start .. stop - 1:
    `source` items (image (3, H, W), target dict) in `batch_indices(.., stream 0)` order, `target`
    images (items (image, ...)) in stream 1's, `cfg.target_batch_size` of them (default
    `batch_size`). workers > 0 loads them in DataLoader worker processes (same batches; the
    loaders get their own generators, so loading draws nothing from the run's)."""
    tb = cfg.target_batch_size or cfg.batch_size
    if workers == 0:
        for s in range(start, stop):
            images, targets = collate([source[i] for i in distributed.local_slice(
                batch_indices(len(source), cfg.batch_size, s, cfg.seed, 0))])
            timgs = None
            if target is not None:
                timgs = [target[i][0] for i in distributed.local_slice(batch_indices(len(target), tb, s, cfg.seed, 1))]
            yield images, targets, timgs
        return

    def loader(ds, batch, stream):
        return DataLoader(ds, batch_sampler=StepBatchSampler(len(ds), batch, cfg.seed, stream, start, stop),
                          collate_fn=collate, num_workers=workers, pin_memory=pin,
                          generator=torch.Generator().manual_seed(cfg.seed))

    tgt = iter(loader(target, tb, 1)) if target is not None else None
    for images, targets in loader(source, cfg.batch_size, 0):
        yield images, targets, (next(tgt)[0] if tgt is not None else None)


def check_batch_norm(image_size: tuple[int, int], batch: int) -> None:
    """Refuse a training batch from which the backbone's last stage (stride 32) holds one value per
    channel (`batch` images of at most 32x32 pixels): BatchNorm cannot train on it, and torch's
    ValueError came as a traceback at the first step."""
    h, w = image_size
    if batch * math.ceil(h / 32) * math.ceil(w / 32) < 2:
        raise InputError("--batch", "", f"a batch of {batch} image of {w}x{h} pixels leaves the network's last "
                                        "stage one value per channel, which BatchNorm cannot train on: use --batch 2 "
                                        "or more (and at least 2 training images), or images over 32 pixels a side")


def train_steps(state: TrainState, cfg: TrainConfig, source, target, steps: int, *, workers: int = 0,
                after_step: Callable[[int, dict], None] | None = None, progress: str | None = None) -> dict[str, float]:
    """`steps` optimizer steps from `state.step` on `source`, each paired with a batch of
    unlabelled `target` images when `cfg.align` aligns (else `target` is not read). The learning
    rate and GRL weight follow the run-wide schedules over `state.total` steps. after_step(step,
    logs) runs after each step (step = steps done). progress: a tqdm bar with this label.
    Returns the mean of each logged value over the steps that logged it."""
    if not parse_align(cfg.align, loop=False):
        target = None
    mcfg = getattr(state.model, "cfg", None)  # a sim2sg network's ModelConfig (a bare nn.Module has none)
    if steps > 0 and mcfg is not None:
        check_batch_norm(mcfg.image_size, min(cfg.batch_size // distributed.world(), len(source)))
    state.model.train()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    bar = None
    if progress is not None and distributed.is_main():
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=progress, unit="step", leave=False, dynamic_ncols=True)
    pin = state.device.type == "cuda"
    try:
        with state.rng.scope():
            for batch in step_batches(source, target, cfg, state.step, state.step + steps, workers, pin):
                logs = train_step(state.model, state.optimizer, batch, cfg, state.step, state.total, state.device)
                state.step += 1
                for k, v in logs.items():  # per key: some (grl_scale) come from the aligned steps only
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
                if after_step is not None:
                    after_step(state.step, logs)
    finally:
        if bar is not None:
            bar.close()
    return {k: v / counts[k] for k, v in sums.items()}
