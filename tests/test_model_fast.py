"""The fast network (`--model fast`, sim2sg.model.fast) on tiny CPU inputs: its encodings, losses,
outputs, alignment, AdaBN, checkpoints, the CLI wiring and exact resume."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.eval import evaluate, load_ground_truth, parse_predictions
from sim2sg.errors import InputError
from sim2sg.model import ModelConfig, SceneGraphCenterNet, build_model
from sim2sg.model.fast import LIGHT_BODIES
from sim2sg.model.centers import (
    center_targets,
    decode_boxes,
    focal_loss,
    pad_targets,
    peaks,
)
from sim2sg.model.pair_head import dense_relation_targets
from sim2sg.train import steps as engine
from sim2sg.train.adabn import target_batchnorm
from sim2sg.train.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from sim2sg.train.config import TrainConfig
from sim2sg.train.data import LabelledDataset, collate
from sim2sg.train.fit import fit
from sim2sg.train.predict import predict_dataset
from sim2sg.train.steps import new_state, train_step
from sim2sg.train.toydata import (
    CATEGORIES,
    PREDICATES,
    write_image_folder,
    write_toy_dataset,
)

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _cfg(**kw):
    return ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64), arch="fast", **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    rng = np.random.default_rng(0)
    src = write_toy_dataset(root / "src", 4, rng, size=(64, 64))
    tgt = write_image_folder(root / "tgt", 3, rng, size=(64, 64))
    return src, tgt


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60], [40, 5, 60, 25]]), "labels": torch.tensor([1, 2, 3]),
         "relations": torch.tensor([[0, 1, 1], [0, 1, 3], [1, 0, 2], [1, 0, 4]])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "relations": torch.zeros(0, 3, dtype=torch.long)},
    ]
    return build_model(_cfg()), images, targets


# ---- encodings --------------------------------------------------------------------------------
def test_targets_are_padded_to_static_shapes_and_encoded_at_the_centre_cell():
    targets = [{"boxes": torch.tensor([[8.0, 4, 24, 20]]), "labels": torch.tensor([2]),
                "relations": torch.zeros(0, 3, dtype=torch.long)},
               {"boxes": torch.tensor([[0.0, 0, 8, 8], [32, 32, 64, 48]]), "labels": torch.tensor([1, 3]),
                "relations": torch.tensor([[0, 1, 2]])}]
    gt = pad_targets(targets, max_objects=4, max_relations=5, device="cpu")
    assert gt["boxes"].shape == (2, 4, 4) and gt["relations"].shape == (2, 5, 3)
    assert gt["valid"].tolist() == [[True, False, False, False], [True, True, False, False]]
    assert gt["relations"][0].eq(-1).all() and gt["relations"][1, 0].tolist() == [0, 1, 2]
    tg = center_targets(gt["boxes"], gt["labels"], gt["valid"], 3, (16, 16), (4.0, 4.0))
    # box 1 of image 0: centre (16, 12) px = cell (x 4, y 3), offset 0, size 4 x 4 cells
    assert int(tg["index"][0, 0]) == 3 * 16 + 4
    assert tg["offset"][0, 0].tolist() == [0.0, 0.0]
    assert tg["log_size"][0, 0].exp().tolist() == pytest.approx([4.0, 4.0])
    heat = tg["heatmap"]
    assert heat.shape == (2, 3, 16, 16) and float(heat[0, 1, 3, 4]) == 1.0
    assert float(heat[0, 1].sum()) > 1.0 and float(heat[0, 0].sum()) == 0.0  # class 2 only in image 0
    assert int((heat == 1).sum()) == 3  # one peak per object
    # decoding the exact encodings gives the boxes back
    off = torch.zeros(2, 2, 16, 16)
    size = torch.zeros(2, 2, 16, 16)
    size[0, :, 3, 4] = tg["log_size"][0, 0]
    box = decode_boxes(tg["index"][:, :1], off, size, (16, 16), (4.0, 4.0), (64, 64))
    assert box[0, 0].tolist() == pytest.approx([8.0, 4, 24, 20])


def test_dense_relation_targets_ignore_padding_and_out_of_range_rows():
    rels = torch.tensor([[[0, 1, 2], [1, 0, 4], [0, 1, 2], [-1, -1, -1], [0, 5, 1], [1, 1, 1]]])
    t = dense_relation_targets(rels, n=3, num_predicates=4)
    assert t.shape == (1, 3, 3, 4)
    assert t[0, 0, 1].tolist() == [0, 1, 0, 0] and t[0, 1, 0].tolist() == [0, 0, 0, 1]
    assert float(t.sum()) == 2.0


def test_focal_loss_is_low_for_the_right_heatmap_and_peaks_are_local_maxima():
    tg = torch.zeros(1, 1, 8, 8)
    tg[0, 0, 2, 3] = 1.0
    good = torch.full((1, 1, 8, 8), -8.0)
    good[0, 0, 2, 3] = 8.0
    assert float(focal_loss(good, tg)) < 0.01 < float(focal_loss(-good, tg))
    heat = torch.sigmoid(good)
    heat[0, 0, 2, 4] = 0.9  # a neighbour of the peak: suppressed by the 3x3 max pool
    scores, cls, cells = peaks(heat, 2)
    assert int(cells[0, 0]) == 2 * 8 + 3 and int(cls[0, 0]) == 0 and float(scores[0, 1]) < 0.01


# ---- the model's contract ---------------------------------------------------------------------
@pytest.mark.parametrize("align,extra", [("none", set()), ("appearance", {"loss_domain_image"}),
                                         ("prediction", {"loss_domain_pred"}),
                                         ("both", {"loss_domain_image", "loss_domain_pred"})])
def test_training_mode_returns_loss_dict(tiny, align, extra):
    model, images, targets = tiny
    model.train()
    losses = model(images, targets, target_images=[torch.rand(3, 64, 64)], align=align, grl_lambda=0.1)
    assert set(losses) == {"loss_heatmap", "loss_box", "loss_relation"} | extra
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    if "loss_domain_image" in extra:
        assert model.domain_image.net[0].weight.grad is not None
    if "loss_domain_pred" in extra:
        assert model.domain_predicates.net[0].weight.grad is not None
        assert model.domain_objects.net[0].weight.grad is not None


def test_eval_mode_returns_per_image_graphs(tiny):
    model, images, _ = tiny
    model.eval()
    model.cfg = dataclasses.replace(model.cfg, box_score_thresh=0.0)  # an untrained model: keep every peak
    out = model(images + [torch.rand(3, 48, 40)])  # a third size: resized, boxes scaled back
    assert len(out) == 3
    for o, (h, w) in zip(out, [(64, 64), (64, 64), (48, 40)]):
        d, m = len(o["boxes"]), len(o["rel_pairs"])
        assert d == model.cfg.detections_per_img
        assert o["labels"].shape == (d,) and o["labels"].min() >= 1 and o["scores"].shape == (d,)
        assert bool((o["scores"][:-1] >= o["scores"][1:]).all())
        assert float(o["boxes"][:, 2].max()) <= w and float(o["boxes"][:, 3].max()) <= h
        k = model.cfg.rel_top_objects
        assert m == min(k * (k - 1), model.cfg.rel_max_pairs_test) and o["rel_scores"].shape == (m, 5)
        assert int(o["rel_pairs"].max()) < k and bool((o["rel_pairs"][:, 0] != o["rel_pairs"][:, 1]).all())


def test_images_marked_not_domain_source_stay_out_of_the_domain_losses(tiny, monkeypatch):
    import sim2sg.model.fast as fast

    model, images, targets = tiny
    model.train()
    seen = []
    real = fast.image_domain_loss
    monkeypatch.setattr(fast, "image_domain_loss", lambda h, f, d, l: seen.append((d, len(f["p2"]))) or real(h, f, d, l))
    targets = [dict(targets[0], domain_source=False), targets[1]]
    model(images, targets, target_images=[torch.rand(3, 64, 64)] * 3, align="both", grl_lambda=0.1)
    assert seen == [(0.0, 1), (1.0, 3)]
    seen.clear()
    targets = [dict(t, domain_source=False) for t in targets]
    losses = model(images, targets, target_images=[torch.rand(3, 64, 64)], align="both", grl_lambda=0.1)
    assert seen == [(1.0, 1)] and torch.isfinite(losses["loss_domain_pred"])


def test_bounded_backward_runs_with_the_fast_domain_heads(tiny):
    model, images, targets = tiny
    model.train()
    net, heads = engine.domain_head_parameters(model)
    assert len(heads) == sum(1 for n, _ in model.named_parameters() if n.split(".")[0].startswith("domain_"))
    losses = model(images, targets, target_images=[torch.rand(3, 64, 64)], align="both", grl_lambda=0.5)
    labelled = losses["loss_heatmap"] + losses["loss_box"] + losses["loss_relation"]
    scale = engine.bounded_backward(model, labelled, losses["loss_domain_image"] + losses["loss_domain_pred"], 0.1, 10.0)
    assert 0 < scale <= 1
    assert model.backbone.body.conv1.weight.grad is not None and model.domain_image.net[0].weight.grad is not None


def test_backbone_features_drive_adabn(tiny):
    model, images, _ = tiny
    feats = model.backbone_features(images)
    assert [tuple(v.shape[-2:]) for v in feats.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    bn = model.backbone.smooth[1]
    before = bn.running_mean.clone()
    bright = [torch.rand(3, 64, 64) * 0.2 + 0.8 for _ in range(3)]
    with target_batchnorm(model, lambda b: model.backbone_features(b), [bright]) as n:
        assert n == 1 and not torch.equal(bn.running_mean, before)
    assert torch.equal(bn.running_mean, before)


def test_a_few_steps_on_a_toy_set_lower_every_loss(data):
    src, _ = data
    torch.manual_seed(0)
    ds = LabelledDataset(src)
    images, targets = collate([ds[i] for i in range(4)])
    cfg = TrainConfig(source=str(src), out="unused", lr=2e-3, lr_warmup_steps=1, steps=12)
    model = build_model(_cfg())
    opt = engine.make_optimizer(model, cfg)
    model.train()
    hist = [train_step(model, opt, (images, targets, None), cfg, s, 12, torch.device("cpu")) for s in range(12)]
    for k in ("loss", "loss_heatmap", "loss_box", "loss_relation"):
        assert np.mean([h[k] for h in hist[-2:]]) < 0.5 * np.mean([h[k] for h in hist[:2]]), (k, [h[k] for h in hist])


def test_checkpoint_roundtrip_and_predictions_json(data, tmp_path):
    src, _ = data
    cfg = TrainConfig(source=str(src), out=str(tmp_path), device="cpu", arch="fast")
    state = new_state(cfg, _cfg(box_score_thresh=0.0))
    meta = {"categories": list(CATEGORIES), "predicates": list(PREDICATES), "env": "toy", "image_size": [64, 64]}
    save_checkpoint(tmp_path / "checkpoint.pt", state, cfg, meta)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["model_config"]["arch"] == "fast"
    model = model_from_checkpoint(ckpt)
    assert isinstance(model, SceneGraphCenterNet)
    for k, v in state.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    preds = predict_dataset(tmp_path / "checkpoint.pt", src, device="cpu")
    parse_predictions(json.loads(json.dumps(preds)), "predictions")
    assert all(im["objects"] and im["relations"] for im in preds["images"])
    assert "detection" in evaluate(load_ground_truth(src), preds)


def test_checkpoints_without_an_arch_load_as_faster_rcnn():
    d = dataclasses.asdict(ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64)))
    d.pop("arch")
    assert ModelConfig.from_dict(d).arch == "frcnn"


# ---- light bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LIGHT_BODIES))
def test_light_bodies_have_their_widths_blocks_and_the_levels_of_resnet18(name):
    blocks, widths = LIGHT_BODIES[name]
    torch.manual_seed(0)
    model = build_model(_cfg(backbone=name))
    body = model.backbone.body
    for i, (n, w) in enumerate(zip(blocks, widths)):
        layer = getattr(body, f"layer{i + 1}")
        assert len(layer) == n and layer[-1].conv2.out_channels == w
        assert layer[0].conv1.stride == ((1, 1) if i == 0 else (2, 2))
    feats = model.backbone_features([torch.rand(3, 64, 48) for _ in range(2)])
    # stride 4, 8, 16, 32 of a 64x48 image, `fast_channels` wide, as on ResNet-18
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "p2": (2, 64, 16, 12), "p3": (2, 64, 8, 6), "p4": (2, 64, 4, 3), "p5": (2, 64, 2, 2)}
    n_body = sum(p.numel() for p in body.parameters())
    n_r18 = sum(p.numel() for p in build_model(_cfg()).backbone.body.parameters())
    assert n_body < n_r18 / 3.5  # half the widths: ~1/4 of the weights, fewer blocks fewer still


def test_light_body_trains_aligned_with_adabn_and_roundtrips_a_checkpoint(data, tiny, tmp_path):
    _, images, targets = tiny
    torch.manual_seed(0)
    model = build_model(_cfg(backbone="resnet10-half"))
    model.train()
    losses = model(images, targets, target_images=[torch.rand(3, 64, 64)] * 2, align="both", grl_lambda=0.1)
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0 and model.domain_image.net[0].weight.grad is not None
    bn = model.backbone.body.layer4[0].bn1
    before = bn.running_mean.clone()
    with target_batchnorm(model, lambda b: model.backbone_features(b), [[torch.rand(3, 64, 64) for _ in range(3)]]):
        assert not torch.equal(bn.running_mean, before)
    src, _ = data
    cfg = TrainConfig(source=str(src), out=str(tmp_path), device="cpu", arch="fast", backbone="resnet10-half")
    state = new_state(cfg, _cfg(backbone="resnet10-half"))
    save_checkpoint(tmp_path / "checkpoint.pt", state, cfg, {"categories": list(CATEGORIES),
                                                             "predicates": list(PREDICATES), "image_size": [64, 64]})
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["model_config"]["backbone"] == "resnet10-half"
    loaded = model_from_checkpoint(ckpt)
    assert len(loaded.backbone.body.layer1) == 1
    for k, v in state.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_an_unknown_or_foreign_backbone_is_one_clear_error(data, tmp_path):
    from sim2sg.loop.config import LoopConfig

    src, _ = data
    with pytest.raises(InputError, match="expected one of resnet18, .*resnet10-half.*, got 'resnet5'"):
        TrainConfig(source="s", out="o", arch="fast", backbone="resnet5").validate()
    with pytest.raises(InputError, match="resnet18-half is a body of the fast network only"):
        TrainConfig(source="s", out="o", arch="frcnn", backbone="resnet18-half").validate()
    with pytest.raises(InputError, match="body of the fast network only"):
        LoopConfig(env="clevr", target="t", out="o", backbone="resnet10-half").validate()
    r = runner.invoke(app, ["train", "--source", str(src), "--model", "frcnn", "--backbone", "resnet10-half",
                            "--out", str(tmp_path / "x"), "--steps", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "backbone: resnet10-half is a body of the fast network only" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "x" / "checkpoint.pt").exists()
    r = runner.invoke(app, ["train", "--source", str(src), "--backbone", "resnet5", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "resnet5" in r.output


# ---- wiring -----------------------------------------------------------------------------------
def test_sim2sg_train_model_fast(data, tmp_path):
    src, tgt = data
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--source", str(src), "--target", str(tgt), "--align", "both", "--model", "fast",
                            "--out", str(out), "--steps", "2", "--batch", "2", "--device", "cpu", "--no-progress",
                            "--grl-bound", "0.5", "--image-every", "0"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["model_config"]["arch"] == "fast" and ckpt["config"]["arch"] == "fast" and ckpt["step"] == 2
    r = runner.invoke(app, ["train", "--source", str(src), "--model", "yolo", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2


def test_sim2sg_loop_model_fast(tmp_path):
    """The loop end to end with the fast network (tiny: SDR phase + one aligned iteration with
    AdaBN), and the network enters the SDR checkpoint key."""
    from sim2sg.loop.config import LoopConfig
    from sim2sg.loop.state import sdr_key, warmup_key

    tgt = write_image_folder(tmp_path / "tgt", 2, np.random.default_rng(0), size=(64, 64))
    out = tmp_path / "run"
    r = runner.invoke(app, ["loop", "--env", "clevr", "--target", str(tgt), "--out", str(out), "--model", "fast",
                            "--loop", "1", "--sdr-scenes", "2", "--sdr-steps", "1", "--iter-steps", "1", "--batch", "2",
                            "--size", "64x64", "--target-bn", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["model_config"]["arch"] == "fast" and ckpt["step"] == 2
    base = LoopConfig(env="clevr", target="t", out="o")
    fast = dataclasses.replace(base, arch="fast")
    assert sdr_key(base) != sdr_key(fast) and warmup_key(base) != warmup_key(fast)
    assert "arch" not in json.loads(sdr_key(base)) and "arch" not in json.loads(warmup_key(base))


def test_resume_after_kill_matches_unbroken_run(data, tmp_path, monkeypatch):
    src, tgt = data

    def cfg(out):
        return TrainConfig(source=str(src), target=str(tgt), align="both", arch="fast", out=str(out), steps=4,
                           batch_size=2, checkpoint_every=2, lr_warmup_steps=2, align_warmup_steps=1, grl_ramp="dann",
                           deterministic=True, tensorboard=False, progress=False, seed=3)

    full = load_checkpoint(fit(cfg(tmp_path / "a")))
    calls = {"n": 0}

    def dying_step(*args, **kw):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return train_step(*args, **kw)

    monkeypatch.setattr(engine, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(tmp_path / "b"))
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(engine, "train_step", train_step)
    resumed = load_checkpoint(fit(cfg(tmp_path / "b"), resume=True))
    assert resumed["step"] == 4
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
