"""`sim2sg loop --resume`: a loop killed between phases or inside one ends bit-identical to an
unbroken run on the CPU (weights, optimizer state, loop generator, recorded phases)."""

import json

import pytest
import torch

from sim2sg.errors import InputError
from sim2sg.loop import run as loop_run
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.run import run
from sim2sg.train import steps as engine
from sim2sg.train.checkpoint import load_checkpoint

train_step = engine.train_step


@pytest.fixture(scope="module")
def target(render_target):
    return render_target(2, 48)[0] / "images"


def _cfg(target, out) -> LoopConfig:
    # SDR phase: steps 0-1; iteration 1 (aligned): steps 2-4, an in-phase resume point after step 4
    return LoopConfig(env="clevr", target=str(target), out=str(out), align="all", iterations=1, sdr_scenes=2,
                      width=48, height=48, sdr_steps=2, iter_steps=3, batch_size=2, lr_warmup_steps=1,
                      align_from_iteration=1, score_threshold=0.0, progress=False, checkpoint_every=2,
                      device="cpu", model={"rpn_post_nms_train": 50, "roi_batch_per_image": 16})


def _kill_at(monkeypatch, step: int) -> None:
    """Make optimizer step `step` (0-based, run-wide) raise, as a kill would stop it."""
    def dying_step(model, optimizer, batch, cfg, s, *args, **kw):
        if s == step:
            raise KeyboardInterrupt
        return train_step(model, optimizer, batch, cfg, s, *args, **kw)

    monkeypatch.setattr(engine, "train_step", dying_step)


def _same(a, b) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in s:
            assert torch.equal(torch.as_tensor(s[k]), torch.as_tensor(t[k])), k


def _phases(out):
    h = json.loads((out / "history.json").read_text())
    return [{k: v for k, v in p.items() if k != "seconds" and not k.endswith("split") and k != "synthesis_seconds"}
            for p in h["phases"]]


@pytest.fixture(scope="module")
def unbroken(target, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("unbroken")
    run(_cfg(target, out), log=lambda m: None)
    return out


@pytest.mark.slow
def test_loop_killed_between_and_inside_phases_resumes_bit_exact(target, unbroken, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    # 1. killed at step 2, the first of iteration 1: between phases (the SDR phase's end point only)
    _kill_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(target, out), log=lambda m: None)
    assert len(json.loads(load_checkpoint(out / "checkpoint.pt")["history"])["phases"]) == 1
    assert not (out / "resume_step.pt").exists()
    # 2. resumed, killed at step 4: inside iteration 1, after its in-phase point (4 steps done)
    _kill_at(monkeypatch, 4)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(target, out), log=logs.append, resume=True)
    assert logs[0] == "[resume] 1 phase(s) done"
    assert load_checkpoint(out / "resume_step.pt")["step"] == 4
    # 3. resumed to the end
    monkeypatch.setattr(engine, "train_step", train_step)
    logs = []
    h = run(_cfg(target, out), log=logs.append, resume=True)
    assert logs[0] == "[resume] 1 phase(s) done, phase 2 from step 4"
    assert [p["name"] for p in h["phases"]] == ["sdr", "iteration 1"]
    _same(load_checkpoint(unbroken / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt"))
    assert load_checkpoint(out / "checkpoint.pt")["loop_rng"] == load_checkpoint(unbroken / "checkpoint.pt")["loop_rng"]
    assert _phases(out) == _phases(unbroken)  # the resumed phases' mean losses too
    assert not (out / "resume_step.pt").exists()
    # a finished run resumed has nothing left to do
    before = load_checkpoint(out / "checkpoint.pt")
    run(_cfg(target, out), log=lambda m: None, resume=True)
    _same(before, load_checkpoint(out / "checkpoint.pt"))


def test_resume_refuses_other_settings_and_empty_folders(target, unbroken, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        run(_cfg(target, tmp_path / "empty"), log=lambda m: None, resume=True)
    import shutil

    shutil.copytree(unbroken, tmp_path / "copy")
    other = _cfg(target, tmp_path / "copy")
    # the message names what changed and never advises deleting the run's checkpoint
    with pytest.raises(InputError, match=r"other settings \(lr 0.001, now 0.5; seed 0, now 3\); resume with the "
                                         r"run's own options, or start a new run in another --out$"):
        run(LoopConfig(**{**other.__dict__, "lr": 0.5, "seed": 3}), log=lambda m: None, resume=True)
    assert loop_run  # the module under test
