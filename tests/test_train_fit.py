"""Training on a tiny synthetic dataset (CPU): the loss falls, and a killed run resumed from its
last checkpoint ends with exactly the weights of an unbroken run."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from sim2sg.train import steps as engine
from sim2sg.train.checkpoint import load_checkpoint
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import ImageFolder, LabelledDataset, collate
from sim2sg.train.fit import fit
from sim2sg.train.steps import train_step
from sim2sg.train.toydata import write_image_folder, write_toy_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    src = write_toy_dataset(root / "src", 4, rng, size=(64, 64))
    tgt = write_image_folder(root / "tgt", 3, rng, size=(64, 64))
    return src, tgt


def test_dataset_targets_follow_labels(data):
    src, _ = data
    ds = LabelledDataset(src)
    img, t = ds[0]
    assert img.shape == (3, 64, 64) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert t["boxes"].shape[1] == 4 and t["labels"].min() >= 1
    # toy relations come from box centres: (s, left, o) means s's centre is left of o's
    c = (t["boxes"][:, :2] + t["boxes"][:, 2:]) / 2
    for s, o, p in t["relations"].tolist():
        if p == 1:
            assert c[s, 0] < c[o, 0]


def test_a_few_steps_lower_the_loss(data):
    src, _ = data
    torch.manual_seed(0)
    ds = LabelledDataset(src)
    images, targets = collate([ds[i] for i in range(4)])
    cfg = TrainConfig(source=str(src), out="unused", lr=2e-3, lr_warmup_steps=1, steps=14)
    from sim2sg.model import ModelConfig, build_model
    model = build_model(ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64)))
    opt = engine.make_optimizer(model, cfg)
    model.train()
    hist = [train_step(model, opt, (images, targets, None), cfg, s, 14, torch.device("cpu")) for s in range(14)]
    first = np.mean([h["loss"] for h in hist[:2]])
    last = np.mean([h["loss"] for h in hist[-2:]])
    assert last < 0.8 * first, [round(h["loss"], 3) for h in hist]
    assert hist[-1]["loss_relation"] < hist[0]["loss_relation"]


def _cfg(src, tgt, out):
    return TrainConfig(source=str(src), target=str(tgt), align="both", out=str(out), steps=4, batch_size=2,
                       checkpoint_every=2, lr_warmup_steps=2, align_warmup_steps=1, grl_ramp="dann",
                       deterministic=True, tensorboard=False, progress=False, seed=3)


def test_resume_after_kill_matches_unbroken_run(data, tmp_path, monkeypatch):
    src, tgt = data
    full = load_checkpoint(fit(_cfg(src, tgt, tmp_path / "a")))
    assert full["step"] == 4

    calls = {"n": 0}

    def dying_step(*args, **kw):
        if calls["n"] == 3:  # step 3 runs after the checkpoint of step 2: its work is lost
            raise KeyboardInterrupt
        calls["n"] += 1
        return train_step(*args, **kw)

    monkeypatch.setattr(engine, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(src, tgt, tmp_path / "b"))
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(engine, "train_step", train_step)
    resumed = load_checkpoint(fit(dataclasses.replace(_cfg(src, tgt, tmp_path / "b"), steps=999), resume=True))
    assert resumed["step"] == 4  # the stored config wins
    assert full["model"].keys() == resumed["model"].keys()
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a = [engine.batch_indices(10, 3, s, seed=1, stream=0) for s in range(7)]
    b = [engine.batch_indices(10, 3, s, seed=1, stream=0) for s in range(7)]
    assert a == b
    assert sorted(sum(a[:3], [])) == sorted(set(sum(a[:3], [])))  # an epoch has no repeats
    assert a[:3] != a[3:6]  # a new permutation each epoch


def test_preloaded_target_images_are_the_decoded_ones(tmp_path):
    folder = write_image_folder(tmp_path / "target", 5, np.random.default_rng(3), size=(40, 56))
    lazy, held = ImageFolder(folder, size=(32, 48)), ImageFolder(folder, size=(32, 48), preload_bytes=5 * 32 * 48 * 3)
    assert held.preloaded and not lazy.preloaded and len(held) == len(lazy) == 5
    assert not ImageFolder(folder, size=(32, 48), preload_bytes=5 * 32 * 48 * 3 - 1).preloaded  # over the budget
    for i in range(5):
        assert torch.equal(lazy[i][0], held[i][0]) and lazy[i][1] == held[i][1]


def test_preloaded_labelled_images_are_the_decoded_ones(data):
    src, _ = data
    lazy, held = LabelledDataset(src), LabelledDataset(src, preload_bytes=4 * 64 * 64 * 3)
    assert held.preloaded and not lazy.preloaded and len(held) == len(lazy) == 4
    assert not LabelledDataset(src, preload_bytes=4 * 64 * 64 * 3 - 1).preloaded  # over the budget
    for i in range(4):
        (a, ta), (b, tb) = lazy[i], held[i]
        assert torch.equal(a, b) and all(torch.equal(ta[k], tb[k]) for k in ("boxes", "labels", "relations"))
    held[0][0].mul_(0)  # an item is the caller's to change: the held image is not
    assert torch.equal(held[0][0], lazy[0][0])


def test_bounded_alignment_trains_and_repeats_bit_for_bit(data, tmp_path):
    """`grl_bound` through `fit`: the aligned steps take the bounded path, and the same seed gives
    the same weights."""
    src, tgt = data
    cfg = dataclasses.replace(_cfg(src, tgt, tmp_path / "a"), grl_bound=0.1)
    a = load_checkpoint(fit(cfg))
    b = load_checkpoint(fit(dataclasses.replace(cfg, out=str(tmp_path / "b"))))
    plain = load_checkpoint(fit(dataclasses.replace(cfg, out=str(tmp_path / "c"), grl_bound=0.0)))
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert not all(torch.equal(v, plain["model"][k]) for k, v in a["model"].items())


def test_deterministic_cuda_fixes_the_cublas_workspace(monkeypatch):
    """On CUDA, `deterministic` sets the fixed cuBLAS workspace that deterministic matrix products
    need, unless the user set one; without `deterministic` nothing is touched. (Only the device
    type is read, so this runs without a GPU.)"""
    from sim2sg.train.steps import make_reproducible

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    make_reproducible(torch.device("cuda"), deterministic=False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    make_reproducible(torch.device("cuda"), deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    make_reproducible(torch.device("cuda"), deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
