"""GPA and SAPNet, the feature-alignment baselines: their losses, heads, training hooks and
checkpoints (tiny CPU)."""

import pytest
import torch

from sim2sg.errors import InputError
from sim2sg.model import ModelConfig, build_model
from sim2sg.model.gpa import class_prototypes, iou_adjacency, prototype_losses
from sim2sg.model.sapnet import SpatialAttentionPyramid, focal_loss
from sim2sg.train.align import model_mode, network_heads, parse_align
from sim2sg.train.checkpoint import model_from_checkpoint, restore, save_checkpoint
from sim2sg.train.config import TrainConfig
from sim2sg.train.steps import (
    DOMAIN_LOSSES,
    add_align_heads,
    domain_head_parameters,
    new_state,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_iou_adjacency_by_hand():
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    a = iou_adjacency(b)
    assert a.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert a[0, 1].item() == pytest.approx(50 / 150) and a[1, 0].item() == pytest.approx(50 / 150)
    assert a[0, 2].item() == 0.0


def test_prototypes_aggregate_over_the_iou_graph():
    """Two overlapping proposals share their features: class k's prototype is
    sum_n c_n p_nk f_n / sum_n c_n p_nk, c = column sums of the IoU matrix."""
    boxes = [torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])]
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    proto = class_prototypes(f, p, boxes)
    c = 1 + 1 / 3  # each of the first two: itself + IoU 1/3 with the other
    assert proto[0].tolist() == pytest.approx([c / (2 * c), c / (2 * c)], rel=1e-5)
    assert proto[1].tolist() == pytest.approx([4.0, 4.0], rel=1e-5)
    # an image of its own with no overlap: plain probability-weighted means
    proto2 = class_prototypes(f, p, [boxes[0][:1] * 0 + torch.tensor([0.0, 0, 1, 1]), boxes[0][1:2] + 100,
                                     boxes[0][2:]])
    assert proto2[0].tolist() == pytest.approx([0.5, 0.5], rel=1e-5)


def test_prototype_losses_pull_same_classes_and_push_close_classes():
    src = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    assert prototype_losses(src, src.clone())[0].item() == 0.0
    intra, inter = prototype_losses(src, src + 1.0)
    assert intra.item() == pytest.approx(1.0)  # mean squared difference, mean over classes
    assert inter.item() == 0.0  # every pair is farther apart than the margin (d = 3 or 2 > 1)
    close = torch.tensor([[0.0, 0.0], [0.5, 0.5]])  # d = 0.5: ((1 - .5) / 1)^2 * .5^2 per pair
    _, inter = prototype_losses(close, close.clone())
    per = 0.25 * 0.25
    # pairs (s0,s1), (t0,t1), (s0,t1), (t0,s1) all at d = 0.5, over 2 K (K - 1) = 4
    assert inter.item() == pytest.approx(4 * per / 4)
    # the gradient of the inter-class loss pushes the two classes apart
    x = close.clone().requires_grad_(True)
    prototype_losses(x, close.clone())[1].backward()
    assert x.grad[0, 0] > 0 and x.grad[1, 0] < 0


def test_sapnet_discriminator_shapes_and_attention_reads_objectness():
    torch.manual_seed(0)
    d = SpatialAttentionPyramid(8, 3, windows=(3, 9, -1), width=16).eval()
    feat, obj = torch.rand(2, 8, 6, 7), torch.rand(2, 3, 6, 7)
    out = d(feat, obj)
    assert out.shape == (2, 2)  # windows larger than the map are clipped to it
    assert not torch.allclose(out, d(feat, obj * 10.0))  # the objectness moves the attention
    assert focal_loss(torch.tensor([[0.0, 0.0]]), 1, 0.0).item() == pytest.approx(0.6931, abs=1e-4)
    assert focal_loss(torch.tensor([[0.0, 0.0]]), 1, 2.0).item() == pytest.approx(0.25 * 0.6931, abs=1e-4)


def test_align_terms():
    assert model_mode(parse_align("gpa", loop=False)) == "gpa"
    assert model_mode(parse_align("label+sapnet", loop=True)) == "sapnet"
    assert network_heads(parse_align("label+sapnet", loop=True)) == ("sapnet",)
    for bad in ("gpa+appearance", "gpa+sapnet", "sapnet+prediction"):
        with pytest.raises(InputError):
            parse_align(bad, loop=True)
    with pytest.raises(InputError):
        TrainConfig(source="x", out="y", target="t", align="gpa", arch="fast").validate()


def _tiny():
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60]]), "labels": torch.tensor([1, 2]),
                "relations": torch.tensor([[0, 1, 1]])}] * 2
    return images, targets


@pytest.mark.parametrize("align,extra,head", [("gpa", {"loss_gpa_rpn", "loss_gpa_rcnn"}, "gpa"),
                                              ("sapnet", {"loss_domain_sap"}, "sapnet")])
def test_baseline_losses_train_their_heads_and_the_network(align, extra, head):
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, num_predicates=2, image_size=(64, 64))
    model = build_model(cfg)
    assert not hasattr(model, head)
    images, targets = _tiny()
    with pytest.raises(ValueError, match="needs its head"):
        model(images, targets, [torch.rand(3, 64, 64)], align, 0.1)
    model.add_align_heads([head])
    assert model.cfg.align_heads == (head,)
    model.train()
    losses = model(images, targets, [torch.rand(3, 64, 64)], align, 0.1)
    base = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_relation"}
    assert set(losses) == base | extra and extra <= set(DOMAIN_LOSSES)
    domain = sum(losses[k] for k in extra)
    assert torch.isfinite(domain)
    model.zero_grad()
    domain.backward()
    net, heads = domain_head_parameters(model)
    head_params = set(map(id, getattr(model, head).parameters()))
    assert head_params <= set(map(id, heads))  # clipped apart by bounded_backward
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, head).parameters())
    body = model.detector.backbone.body.layer4[0].conv1.weight
    assert body.grad is not None and body.grad.abs().sum() > 0  # the alignment reaches the encoder
    # no target images: the labelled losses only
    assert set(model(images, targets, None, align, 0.1)) == base


def test_sapnet_gradient_is_reversed_into_the_network():
    """Behind the GRL the discriminator descends its loss while the network ascends it: with
    lambda = 1 the encoder's gradient is the negative of the one without reversal."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=2, num_predicates=1, image_size=(64, 64)))
    model.add_align_heads(["sapnet"])
    model.eval()  # no dropout, fixed BatchNorm: two passes see the same function
    images, targets = _tiny()
    grads = []
    for lam in (1.0, -1.0):  # -1: the GRL becomes the identity
        model.zero_grad()
        from sim2sg.model.sapnet import sap_domain_loss
        feats = model.backbone_features(images)
        obj = model.detector.rpn.head([feats["2"]])[0][0]
        sap_domain_loss(model.sapnet["deep"], feats["2"], obj, 0, lam, 3.0).backward()
        grads.append(model.detector.backbone.body.layer3[0].conv1.weight.grad.clone())
    assert torch.allclose(grads[0], -grads[1], atol=1e-7)


def test_heads_are_added_to_the_optimizer_and_checkpoints_restore_them(tmp_path):
    cfg = TrainConfig(source="x", out=str(tmp_path), target="t", align="gpa", batch_size=2, device="cpu", lr=1e-3)
    mcfg = ModelConfig(num_classes=3, num_predicates=2, image_size=(64, 64))
    state = new_state(cfg, mcfg, 4)
    plain = new_state(cfg, mcfg, 4)
    save_checkpoint(tmp_path / "plain.pt", plain, cfg, {})
    groups = len(state.optimizer.param_groups)
    add_align_heads(state, ["gpa"])
    add_align_heads(state, ["gpa"])  # idempotent
    assert len(state.optimizer.param_groups) == groups + 2
    images, targets = _tiny()
    logs = train_step(state.model, state.optimizer, (images, targets, [torch.rand(3, 64, 64)] * 2), cfg, 0, 4,
                      state.device)
    assert "loss_gpa_rcnn" in logs and "loss_gpa_rpn" in logs
    save_checkpoint(tmp_path / "gpa.pt", state, cfg, {})
    ckpt = torch.load(tmp_path / "gpa.pt", weights_only=True)
    assert ckpt["model_config"]["align_heads"] == ["gpa"] or ckpt["model_config"]["align_heads"] == ("gpa",)
    fresh = new_state(cfg, mcfg, 4)  # no head yet: restore adds it, then loads weights and Adam's state
    restore(fresh, ckpt)
    assert torch.equal(fresh.model.gpa.rcnn.weight, state.model.gpa.rcnn.weight)
    assert model_from_checkpoint(ckpt).gpa.rpn.weight.shape == state.model.gpa.rpn.weight.shape
    # a checkpoint without heads (every one written before) loads as before: no head appears
    old = new_state(cfg, mcfg, 4)
    restore(old, torch.load(tmp_path / "plain.pt", weights_only=True))
    assert not hasattr(old.model, "gpa")
