"""Training under torchrun, with 2 gloo processes on the CPU (`sim2sg.train.distributed`).

1. Two processes with a global batch of 4 (2 images each) end with the weights of one process
   trained on the same batches of 4. The model here has no BatchNorm and a per-image mean loss,
   so one process and two compute the same gradient up to float rounding; the detector could not
   show that: its BatchNorm normalises over each rank's 2 images instead of all 4, and its
   proposal sampling draws per rank (by design, see the module docstring).
2. The real network, aligned with the bounded GRL backward, through `fit`: a 2-process run killed
   after its step-2 checkpoint and resumed (through `torchrun -m sim2sg train --resume`, the
   command line users run) ends with exactly the weights of an unbroken 2-process run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sim2sg.train import distributed
from sim2sg.train import steps as engine
from sim2sg.train.checkpoint import load_checkpoint
from sim2sg.train.config import TrainConfig
from sim2sg.train.fit import fit
from sim2sg.train.rng import TorchRNG
from sim2sg.train.toydata import write_image_folder, write_toy_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int) -> dict:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}


def _entry(rank: int, port: int, fn, args) -> None:
    os.environ.update(_rank_env(rank, port))
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu") == "cpu" and distributed.world() == 2
    try:
        fn(*args)
    finally:
        distributed.shutdown()


def run_two(fn, *args) -> None:
    """fn(*args) in 2 gloo processes (what torchrun --nproc-per-node 2 sets up)."""
    mp.start_processes(_entry, args=(_free_port(), fn, args), nprocs=2, start_method="spawn", join=True)


# ---- 1. two processes = one process with the same global batch --------------------------------
class TinyNet(torch.nn.Module):
    """A conv net without BatchNorm whose loss is a mean over images (so a mean of per-rank means
    is the global mean); the step loop's model interface."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, images, targets, target_images=None, mode="none", lam=0.0):
        x = torch.stack(images)
        y = self.head(torch.relu(self.conv(x)).mean((2, 3))).squeeze(1)
        t = torch.stack([tt["y"] for tt in targets])
        return {"loss_fit": ((y - t) ** 2).mean()}


def _tiny_run(out: str, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    source = [(torch.rand(3, 8, 8, generator=g), {"y": torch.rand((), generator=g)}) for _ in range(6)]
    cfg = TrainConfig(source="<memory>", out="unused", batch_size=4, lr=0.05, lr_warmup_steps=1, seed=0,
                      grad_clip=0.5, tensorboard=False, progress=False)
    model = TinyNet()
    cpu = torch.device("cpu")
    state = engine.TrainState(model, engine.make_optimizer(model, cfg), cpu, TorchRNG.seeded(0, cpu), 0, steps)
    means = engine.train_steps(state, cfg, source, None, steps)
    torch.save({"model": model.state_dict(), "means": means}, f"{out}.{distributed.rank()}")


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    _tiny_run(one, 5)
    run_two(_tiny_run, two, 5)
    a = torch.load(f"{one}.0")
    b0, b1 = torch.load(f"{two}.0"), torch.load(f"{two}.1")
    for k, v in a["model"].items():
        assert torch.equal(b0["model"][k], b1["model"][k]), k  # one model on every rank
        assert torch.allclose(v, b0["model"][k], atol=1e-6, rtol=1e-5), k
        assert not torch.equal(v, TinyNet().state_dict()[k]), k  # it did train
    assert b0["means"] == b1["means"]  # logged losses are the ranks' mean
    assert b0["means"]["loss"] == pytest.approx(a["means"]["loss"], rel=1e-5)


def test_each_rank_takes_its_slice_of_the_global_batch(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: 2)
    batch = engine.batch_indices(10, 5, 3, seed=1, stream=0)
    parts = []
    for r in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(distributed.local_slice(batch))
    assert parts[0] + parts[1] == batch and [len(p) for p in parts] == [2, 3]


# ---- 2. exact resume of the real network under DDP -------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    return write_toy_dataset(root / "src", 4, rng, size=(32, 32)), write_image_folder(root / "tgt", 4, rng, size=(32, 32))


SMALL = {"rpn_pre_nms_train": 100, "rpn_post_nms_train": 50, "roi_batch_per_image": 16, "box_head_dim": 64,
         "rel_hidden": 64, "message_passing": 0}  # the network, smaller: seconds per run on 2 shared cores


def _cfg(src, tgt, out) -> TrainConfig:
    return TrainConfig(source=str(src), target=str(tgt), align="both", grl_bound=0.1, out=str(out), steps=3,
                       batch_size=4, checkpoint_every=2, lr_warmup_steps=2, align_warmup_steps=1,
                       grl_ramp="dann", deterministic=True, tensorboard=False, progress=False, seed=3,
                       model=SMALL)


def _fit_twice(unbroken: TrainConfig, killed: TrainConfig, die_before: int) -> None:
    """fit(unbroken), then fit(killed) with every rank interrupted before step `die_before`
    (0-based), as a killed job (one launch for both: starting processes is most of the cost)."""
    fit(unbroken)
    real = engine.train_step

    def dying(*args, **kw):
        if args[4] >= die_before:  # the step number
            raise KeyboardInterrupt
        return real(*args, **kw)

    engine.train_step = dying
    try:
        fit(killed)
    except KeyboardInterrupt:
        pass
    finally:
        engine.train_step = real


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(_free_port()), "-m", "sim2sg", "train", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_resume_under_ddp_is_exact(data, tmp_path):
    src, tgt = data
    # b is killed after the checkpoint of step 2
    run_two(_fit_twice, _cfg(src, tgt, tmp_path / "a"), _cfg(src, tgt, tmp_path / "b"), 2)
    full = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert full["step"] == 3 and len(full["rng_ranks"]) == 2
    assert not torch.equal(full["rng_ranks"][0]["torch"], full["rng_ranks"][1]["torch"])

    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    r = _torchrun("--source", str(src), "--out", str(tmp_path / "b"), "--device", "cpu", "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("wrote ") == 1  # rank 0 alone reports
    resumed = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert resumed["step"] == 3 and resumed["config"]["grl_bound"] == 0.1  # the stored config wins
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
