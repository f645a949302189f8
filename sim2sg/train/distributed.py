"""Data-parallel training under torchrun: `torchrun --nproc-per-node N -m sim2sg train ...`.

Every function here is a no-op in a single process (no process group), so the step loop calls them
unconditionally. Under torchrun (WORLD_SIZE > 1) `init_from_env` joins the process group (gloo on
the CPU, NCCL on GPUs, one GPU per local rank) and then:

- Batches: the global batch of step s is `steps.batch_indices(...)` as in one process; rank r
  trains on its contiguous slice (`local_slice`). The data order, and so exact resume, does not
  depend on the number of processes.
- Gradients: after each backward, every parameter's gradient is averaged over the ranks, weighted
  by each rank's number of images (`sync_grads`), in one flat all-reduce; clipping and the
  optimizer step then run on identical gradients, so the weights stay identical on every rank.
  This is done by hand rather than with DistributedDataParallel: `bounded_backward` takes the
  labelled gradient with `torch.autograd.grad`, which DDP's reducer never sees, and the
  network's forward paths (aligned or not, with or without target images) leave different
  parameters unused from step to step. A parameter without a gradient on every rank stays
  without one (AdamW then skips it, as in one process).
- BatchNorm: each rank normalises with its own slice's batch statistics (no SyncBatchNorm: the
  detector's per-image heads and the domain classifiers call the backbone a varying number of
  times, and sync'd statistics would deadlock when ranks differ); after each step the running
  statistics are broadcast from rank 0 (what DDP's broadcast_buffers does), so every rank holds
  one model and predicts alike (the loop's synthesis). So N processes with a global batch B
  train like one process whose BatchNorm sees batches of B/N.
- Randomness: torchvision's proposal sampling draws from torch's default generator (lent by
  `TorchRNG.scope`); rank 0 keeps the run's generator (a single process's), other ranks get their
  own (`per_rank_rng`); checkpoints store every rank's state (`gather_rng`), so resume with the
  same number of processes is exact.
- Checkpoints, TensorBoard, config.json and validation are written by rank 0 only; logged losses
  are averaged over the ranks (`mean_logs`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from sim2sg.errors import InputError


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join torchrun's process group when this process was started by it (WORLD_SIZE > 1 in the
    environment) and return the device this rank trains on: `device` on the CPU (gloo backend),
    cuda:LOCAL_RANK for "auto"/"cuda" on GPUs (NCCL; NCCL_NVLS_ENABLE defaults to 0, NVLink
    multicast off, unless the user set it). One process: `device` unchanged."""
    from sim2sg.device import resolve_device

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    dev = resolve_device(device)
    if dev.type == "cuda":
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    return str(dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch: int, option: str = "--batch") -> None:
    """Every rank needs at least one image of each global batch."""
    if batch < world():
        raise InputError(option, "", f"the global batch {batch} is smaller than the {world()} processes")


def local_slice(indices: list[int]) -> list[int]:
    """This rank's contiguous part of a global batch (sizes differ by at most one)."""
    w = world()
    if w == 1:
        return indices
    r, n = rank(), len(indices)
    return indices[r * n // w:(r + 1) * n // w]


def per_rank_rng(rng, seed: int, device: torch.device):
    """Rank 0 keeps `rng` (a single process's); rank r > 0 gets generators seeded from (seed, r),
    so the ranks' proposal sampling draws differ."""
    if rank() == 0:
        return rng
    from sim2sg.train.rng import TorchRNG

    return TorchRNG.seeded(int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0]), device)


def reduce_tensors(tensors: list, like: list[torch.Tensor], count: float) -> list:
    """Average of per-rank `tensors` (gradients, None where a rank has none) weighted by each rank's
    `count`: sum_r count_r t_r / sum_r count_r, in one all-reduce. An entry that is None on every
    rank stays None; one that is None on some ranks counts as zeros there."""
    if not active():
        return list(tensors)
    dev = like[0].device
    present = torch.tensor([t is not None for t in tensors], dtype=torch.float32, device=dev)
    parts = [(t if t is not None else torch.zeros_like(p)).reshape(-1).float() * count for t, p in zip(tensors, like)]
    flat = torch.cat(parts + [present, torch.tensor([float(count)], device=dev)])
    dist.all_reduce(flat)
    total = flat[-1]
    present = flat[-1 - len(tensors):-1]
    out, k = [], 0
    for i, p in enumerate(like):
        n = p.numel()
        out.append((flat[k:k + n] / total).view_as(p).to(p.dtype) if present[i] > 0 else None)
        k += n
    return out


def sync_grads(params, count: float) -> None:
    """Replace each parameter's `.grad` by its count-weighted average over the ranks."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    for p, g in zip(params, reduce_tensors([p.grad for p in params], params, count)):
        p.grad = g


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, one broadcast per dtype."""
    if not active():
        return
    by_dtype: dict = {}
    for b in model.buffers():
        by_dtype.setdefault(b.dtype, []).append(b)
    for bufs in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in bufs])
        dist.broadcast(flat, 0)
        k = 0
        for b in bufs:
            b.copy_(flat[k:k + b.numel()].view_as(b))
            k += b.numel()


def mean_logs(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    """Logged values averaged over the ranks (every rank logs the same keys)."""
    if not active():
        return logs
    keys = sorted(logs)
    t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: v / world() for k, v in zip(keys, t.tolist())}


def gather_rng(rng) -> list[dict] | None:
    """Every rank's `TorchRNG.state_dict()` (collective: all ranks call it), None in one process."""
    if not active():
        return None
    states = [None] * world()
    dist.all_gather_object(states, rng.state_dict())
    return states


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (picklable)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]
