"""`--compile` (TrainConfig.compile / LoopConfig.compile): the fast network's dense pass under
torch.compile. Tests use the "aot_eager" backend (`steps.COMPILE_BACKEND`): it traces the same
graphs as inductor (dynamo + AOT autograd) without generating C++: inductor's first aligned step of
the 64x64 resnet10-half network took 190 s on the 2-core CPU (its first inference 48 s more)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.errors import InputError
from sim2sg.model import ModelConfig, build_model
from sim2sg.model.domain import running_stats_frozen
from sim2sg.train import steps
from sim2sg.train.checkpoint import load_checkpoint, model_from_checkpoint, restore
from sim2sg.train.config import TrainConfig
from sim2sg.train.fit import fit
from sim2sg.train.steps import new_state, train_step
from sim2sg.train.toydata import write_image_folder, write_toy_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(autouse=True)
def cheap_backend(monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setattr(steps, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()  # each test traces and counts its own graphs
    counters.clear()
    with torch._functorch.config.patch(donated_buffer=True):  # torch's default, for each test anew
        yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    rng = np.random.default_rng(0)
    return write_toy_dataset(root / "src", 4, rng, size=(64, 64)), write_image_folder(root / "tgt", 3, rng, size=(64, 64))


def _mcfg(backbone="resnet10-half"):
    return ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64), arch="fast", backbone=backbone)


def _batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60]]), "labels": torch.tensor([1, 3]),
                "relations": torch.tensor([[0, 1, 1], [1, 0, 2]])} for _ in range(n)]
    return images, targets


def _compiled(model) -> bool:
    return hasattr(vars(model).get("_dense"), "_torchdynamo_orig_callable")


def test_the_dense_pass_traces_as_one_graph_in_every_mode():
    """No graph breaks: source pass, target pass (running statistics frozen) and inference. (Every
    body is torchvision's BasicBlock or Bottleneck run stage by stage by `ResNetFPNLite.forward`.)"""
    model = build_model(_mcfg())
    dense = type(model)._dense.__get__(model)
    x = torch.rand(2, 3, 64, 64)
    model.train()
    runs = [torch._dynamo.explain(dense)(x)]
    with running_stats_frozen(model.backbone):
        runs.append(torch._dynamo.explain(dense)(x))
    model.eval()
    with torch.no_grad():
        runs.append(torch._dynamo.explain(dense)(x))
    assert [(e.graph_count, e.graph_break_count) for e in runs] == [(1, 0)] * 3, [e.break_reasons for e in runs]


def test_the_option_compiles_the_dense_pass_of_the_trained_network(data):
    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.trainer import make_trainer
    from sim2sg.scene.environment import load_env

    src, _ = data
    cfg = TrainConfig(source=str(src), out="unused", arch="fast", backbone="resnet10-half", device="cpu")
    assert not _compiled(new_state(cfg, _mcfg()).model)
    state = new_state(dataclasses.replace(cfg, compile=True), _mcfg())
    assert _compiled(state.model)
    assert list(state.model.state_dict()) == list(build_model(_mcfg()).state_dict())  # nothing renamed
    loop = LoopConfig(env="clevr", target="t", out="o", arch="fast", backbone="resnet10-half", width=64, height=64,
                      device="cpu", compile=True)
    tr = make_trainer(loop, load_env("clevr"))
    assert tr.cfg.compile and _compiled(tr.state.model)


def _eager_and_compiled(step_cfgs):
    """Aligned steps (source batch 3, target batch 2), one per config of `step_cfgs`, on a fresh
    eager and a fresh compiled network: {compiled: (per-step logs, state)}, the states in eval mode."""
    images, targets = _batch(3, 0)
    target_images = _batch(2, 1)[0]
    runs = {}
    for compiled in (False, True):
        state = new_state(dataclasses.replace(step_cfgs[0], compile=compiled), _mcfg())
        state.model.train()
        logs = [train_step(state.model, state.optimizer, (images, targets, target_images), c, s, 2, state.device)
                for s, c in enumerate(step_cfgs)]
        state.model.eval()
        runs[compiled] = logs, state
    for a, b in zip(runs[False][0], runs[True][0]):  # the same losses, within float rounding
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (k, a[k], b[k])
    return runs


@pytest.mark.slow  # ~15 s: both networks, two steps and three inferences each
def test_compiled_steps_give_the_eager_losses_and_predictions():
    """Two aligned steps (source batch 3, target batch 2: the target pass is a second graph, and
    a second batch size), then inference on batches of 4, 2 and 4: the same losses, weights and
    outputs as the eager network, within float rounding, from at most 3 graphs."""
    from torch._dynamo.utils import counters

    cfg = TrainConfig(source="-", out="-", target="-", align="both", arch="fast", backbone="resnet10-half",
                      lr=1e-3, lr_warmup_steps=1, device="cpu")
    runs = _eager_and_compiled([cfg, cfg])
    images, target_images = _batch(3, 0)[0], _batch(2, 1)[0]
    sd_e, sd_c = (runs[c][1].model.state_dict() for c in (False, True))
    assert sd_e.keys() == sd_c.keys()
    for k in sd_e:
        assert torch.allclose(sd_e[k].float(), sd_c[k].float(), rtol=1e-3, atol=1e-5), k
    for k in (2, 1, 2):
        pe, pc = (runs[c][1].model(images[:k] + target_images[:k]) for c in (False, True))
        for a, b in zip(pe, pc):
            assert torch.allclose(a["scores"], b["scores"], atol=1e-4) and torch.equal(a["labels"], b["labels"])
    # source pass; target pass (BatchNorm momentum 0, batch 2: a symbolic batch); inference
    # (no_grad), whose batch sizes that symbolic batch already covers
    assert counters["stats"]["unique_graphs"] == 3, dict(counters["stats"])


def test_a_bounded_step_after_plain_ones_runs_compiled():
    """A loop trains plain steps (iteration 1), then bounded aligned ones (`--grl-bound`, whose
    first backward keeps the graph): the compiled backward, built by the plain steps, must allow
    that (AOT autograd's donated buffers forbid it; an H100 table run failed at iteration 2).
    Same losses as eager."""
    cfg = TrainConfig(source="-", out="-", target="-", align="both", arch="fast", backbone="resnet10-half",
                      lr=1e-3, lr_warmup_steps=1, device="cpu", grl_bound=0.1)
    runs = _eager_and_compiled([dataclasses.replace(cfg, grl_bound=0.0), cfg])
    assert "grl_scale" in runs[True][0][1] and "grl_scale" not in runs[True][0][0]


def test_sim2sg_train_compile_records_the_option(data, tmp_path):
    src, _ = data
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--source", str(src), "--model", "fast", "--backbone", "resnet10-half", "--compile",
                            "--out", str(out), "--steps", "1", "--batch", "2", "--device", "cpu", "--no-progress",
                            "--image-every", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["compile"] is True
    assert load_checkpoint(out / "checkpoint.pt")["config"]["compile"] is True
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 1  # the step ran the compiled pass


def test_compile_with_faster_rcnn_is_one_clear_error(data, tmp_path):
    from sim2sg.loop.config import LoopConfig

    with pytest.raises(InputError, match="compile: torch.compile applies to the fast network only"):
        TrainConfig(source="s", out="o", compile=True).validate()
    with pytest.raises(InputError) as e:
        LoopConfig(env="clevr", target="t", out="o", compile=True).validate()
    assert (e.value.source, e.value.field) == ("--compile", "compile")
    src, tgt = data
    for args in (["train", "--source", str(src)], ["loop", "--env", "clevr", "--target", str(tgt)]):
        r = runner.invoke(app, [*args, "--compile", "--out", str(tmp_path / args[0]), "--device", "cpu"])
        assert r.exit_code == 2 and "compile: torch.compile applies to the fast network only" in r.output, r.output
        assert "Traceback" not in r.output and not (tmp_path / args[0] / "checkpoint.pt").exists()


def test_checkpoints_move_between_compiled_and_eager_runs(data, tmp_path, monkeypatch):
    """A compiled run killed after step 3 resumes eager (and the reverse way, a checkpoint of an
    eager run restores into a compiled state); both end where an unbroken eager run ends."""
    src, tgt = data

    def cfg(out, compiled):
        return TrainConfig(source=str(src), target=str(tgt), align="both", arch="fast", backbone="resnet10-half",
                           out=str(out), steps=4, batch_size=2, checkpoint_every=2, lr_warmup_steps=2,
                           tensorboard=False, progress=False, compile=compiled, device="cpu")

    eager = load_checkpoint(fit(cfg(tmp_path / "eager", False)))
    real_step, calls = steps.train_step, {"n": 0}

    def dying_step(*args, **kw):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_step(*args, **kw)

    monkeypatch.setattr(steps, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(tmp_path / "mixed", True))
    half = load_checkpoint(tmp_path / "mixed" / "checkpoint.pt")
    assert half["step"] == 2 and half["config"]["compile"] is True
    assert list(half["model"]) == list(eager["model"])
    model_from_checkpoint(half)  # an eager network loads it (strict)
    monkeypatch.setattr(steps, "train_step", real_step)
    done = load_checkpoint(fit(cfg(tmp_path / "mixed", False), resume=True))
    assert done["step"] == 4 and done["config"]["compile"] is False
    assert json.loads((tmp_path / "mixed" / "config.json").read_text())["compile"] is False
    for k, v in eager["model"].items():
        assert torch.allclose(v.float(), done["model"][k].float(), rtol=1e-3, atol=1e-5), k

    state = new_state(cfg(tmp_path / "c", True), _mcfg())  # eager checkpoint -> compiled state
    restore(state, eager)
    assert _compiled(state.model) and state.step == 4


def test_compile_leaves_loop_keys_and_finished_rows_as_they_were(tmp_path):
    """Saved SDR phases, warm-ups and resume points, and finished table rows, made before the
    option existed or with the other value, still match."""
    from sim2sg.experiments.tables import complete_history
    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.state import resume_key, sdr_key, warmup_key

    base = LoopConfig(env="clevr", target="t", out="o", arch="fast")
    comp = dataclasses.replace(base, compile=True)
    for key in (sdr_key, warmup_key, resume_key):
        assert key(base) == key(comp) and "compile" not in json.loads(key(base))
    old = {k: v for k, v in dataclasses.asdict(base).items() if k != "compile"}
    (tmp_path / "history.json").write_text(json.dumps({"config": old, "phases": [], "seconds": 1.0}))
    assert complete_history(tmp_path / "history.json", comp) is not None
    assert complete_history(tmp_path / "history.json", dataclasses.replace(comp, seed=1)) is None
