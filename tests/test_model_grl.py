"""Gradient reversal, GRL schedules, relation targets/scores and the model's two modes (tiny CPU)."""

import math

import pytest
import torch

from sim2sg.model import (
    ModelConfig,
    build_model,
    dann_lambda,
    grad_reverse,
    grl_schedule,
)
from sim2sg.model.relation_head import (
    all_pairs,
    predicate_scores,
    relation_targets,
    spatial_encoding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grl_is_identity_forward_and_negates_and_scales_gradients():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.25, -0.5, -0.75]))


def test_grl_zero_weight_blocks_gradient_and_upstream_params_get_reversed_grad():
    w = torch.nn.Parameter(torch.tensor(2.0))
    loss = grad_reverse(w * 3.0, 1.0).sum()
    loss.backward()
    assert w.grad.item() == pytest.approx(-3.0)
    w.grad = None
    grad_reverse(w * 3.0, 0.0).sum().backward()
    assert w.grad.item() == 0.0


def test_dann_ramp_and_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_schedule(4, 100, 0.1, warmup_steps=5, ramp="fixed") == 0.0
    assert grl_schedule(5, 100, 0.1, warmup_steps=5, ramp="fixed") == 0.1
    assert grl_schedule(5, 100, 0.1, warmup_steps=5, ramp="dann") == 0.0
    assert grl_schedule(100, 100, 0.1, warmup_steps=0, ramp="dann") == pytest.approx(0.1 * dann_lambda(1.0))


def test_relation_targets_are_multi_label_in_all_pairs_order():
    rel = torch.tensor([[0, 1, 1], [0, 1, 3], [2, 0, 2], [2, 0, 2]])  # (0,1) holds two predicates
    pairs, y = relation_targets(3, rel, num_predicates=4)
    assert pairs.tolist() == all_pairs(3).tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert y.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_predicate_scores_background_is_probability_that_none_holds():
    logits = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    s = predicate_scores(logits)
    assert s.shape == (2, 3)
    assert s[0].tolist() == pytest.approx([0.25, 0.5, 0.5])
    assert s[1, 0] < 1e-8 and s[1, 1] > 0.999 and s[1, 2] > 0.999  # both predicates at once


def test_spatial_encoding_signs():
    bs = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    bo = torch.tensor([[20.0, 0.0, 30.0, 10.0]])  # object right of subject
    e = spatial_encoding(bs, bo, (100, 200))
    assert e.shape == (1, 15)
    assert e[0, 8].item() == pytest.approx(2.0)  # dx / w_s
    assert e[0, 12].item() == 0.0  # IoU
    assert e[0, 13].item() == pytest.approx(20 / 200)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64))
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60], [40, 5, 60, 25]]), "labels": torch.tensor([1, 2, 3]),
         "relations": torch.tensor([[0, 1, 1], [0, 1, 3], [1, 0, 2], [1, 0, 4]])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "relations": torch.zeros(0, 3, dtype=torch.long)},
    ]
    return build_model(cfg), images, targets


@pytest.mark.parametrize("align,extra", [("none", set()), ("appearance", {"loss_domain_image"}),
                                         ("prediction", {"loss_domain_pred"}),
                                         ("both", {"loss_domain_image", "loss_domain_pred"})])
def test_training_mode_returns_loss_dict(tiny, align, extra):
    model, images, targets = tiny
    model.train()
    losses = model(images, targets, target_images=[torch.rand(3, 64, 64)], align=align, grl_lambda=0.1)
    base = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_relation"}
    assert set(losses) == base | extra
    total = sum(losses.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    if "loss_domain_image" in extra:
        assert model.domain_image.net[0].weight.grad is not None


def test_eval_mode_returns_per_image_graphs(tiny):
    model, images, _ = tiny
    model.eval()
    out = model(images)
    assert len(out) == 2
    for o in out:
        d, m = len(o["boxes"]), len(o["rel_pairs"])
        assert o["boxes"].shape == (d, 4) and o["labels"].shape == (d,) and o["scores"].shape == (d,)
        assert o["rel_scores"].shape == (m, 5)
        assert m <= model.cfg.rel_max_pairs_test
        if m:
            assert int(o["rel_pairs"].max()) < min(d, model.cfg.rel_top_objects)
            assert bool((o["rel_pairs"][:, 0] != o["rel_pairs"][:, 1]).all())


def test_target_pass_uses_its_own_batch_statistics_and_leaves_the_labelled_path_alone():
    """Aligning adds domain losses only: the source losses and BatchNorm running statistics are
    those of align="none" (a joint pass would normalise the source with mixed statistics)."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64))
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60]]), "labels": torch.tensor([1, 2]),
                "relations": torch.tensor([[0, 1, 1]])}] * 2
    target_images = [torch.rand(3, 64, 64) * 0.2 + 0.8 for _ in range(2)]  # another look: other statistics

    def run(align):
        model = build_model(cfg)
        model.load_state_dict(ref_state)
        model.train()
        torch.manual_seed(1)  # the RPN and ROI samplers draw from the global generator
        losses = model(images, targets, target_images=target_images, align=align, grl_lambda=0.1)
        bn = model.detector.backbone.body.bn1
        return losses, bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)

    ref_state = build_model(cfg).state_dict()
    plain, mean0, var0, n0 = run("none")
    both, mean1, var1, n1 = run("both")
    for k, v in plain.items():
        assert torch.equal(v, both[k]), k
    assert torch.equal(mean0, mean1) and torch.equal(var0, var1) and n0 == n1 == 1
    assert {"loss_domain_image", "loss_domain_pred"} <= set(both)


def test_images_marked_not_domain_source_stay_out_of_the_domain_losses(monkeypatch):
    """A source image with "domain_source": False trains the labelled losses only: the domain
    classifiers get exactly the other source images' features and outputs (the rows they get
    when nothing is marked), and with every source image marked, the target halves alone."""
    import sim2sg.model.sgg as sgg

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64))
    images = [torch.rand(3, 64, 64) for _ in range(3)]
    boxes = torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2]), "relations": torch.tensor([[0, 1, 1]])}] * 3
    target_images = [torch.rand(3, 64, 64) for _ in range(2)]
    state = build_model(cfg).state_dict()
    seen = []
    image_loss, pred_loss = sgg.image_domain_loss, sgg.prediction_domain_loss

    def record_image(head, feats, domain, lam):  # D^a's inputs, then the real loss
        seen.append(("a", domain, {k: v.detach() for k, v in feats.items()}))
        return image_loss(head, feats, domain, lam)

    def record_pred(head, probs, domain, lam):  # D^c's inputs, then the real loss
        seen.append(("c", domain, probs.detach()))
        return pred_loss(head, probs, domain, lam)

    monkeypatch.setattr(sgg, "image_domain_loss", record_image)
    monkeypatch.setattr(sgg, "prediction_domain_loss", record_pred)

    def run(marks):
        seen.clear()
        model = build_model(cfg)
        model.load_state_dict(state)
        model.train()
        torch.manual_seed(1)
        tg = [dict(t, domain_source=m) for t, m in zip(targets, marks)]
        losses = model(images, tg, target_images=target_images, align="both", grl_lambda=0.1)
        return losses, list(seen)

    plain, all_in = run([True, True, True])
    marked, some_in = run([True, False, True])
    for k in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_relation"):
        assert torch.equal(plain[k], marked[k]), k  # the labelled path does not change
    src_all = [s for s in all_in if s[1] == 0.0]
    src_some = [s for s in some_in if s[1] == 0.0]
    # D^a: the feature maps of images 0 and 2, exactly
    (_, _, fa), (_, _, fs) = src_all[0], src_some[0]
    assert all(torch.equal(fs[k], fa[k][[0, 2]]) for k in fa)
    # D^c: the object distributions and predicate scores of images 0 and 2 (image 0's rows first)
    for (_, _, pa), (_, _, ps) in zip(src_all[1:], src_some[1:]):
        per = len(pa) // 3  # every image has its full quota of proposals here
        assert len(ps) == 2 * per
        torch.testing.assert_close(ps, torch.cat([pa[:per], pa[2 * per:]]), rtol=0, atol=1e-6)
    # the target halves are the same calls
    assert sum(s[1] == 1.0 for s in all_in) == sum(s[1] == 1.0 for s in some_in) == 3

    none, none_in = run([False, False, False])
    assert all(s[1] == 1.0 for s in none_in) and len(none_in) == 3
    head = build_model(cfg)
    head.load_state_dict(state)
    torch.testing.assert_close(none["loss_domain_image"],
                               0.5 * image_loss(head.domain_image, none_in[0][2], 1.0, 0.1))
