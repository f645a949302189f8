"""`bounded_backward`: the GRL gradient bounded per network tensor relative to the labelled one."""

import math

import pytest
import torch
from torch import nn

from sim2sg.errors import InputError
from sim2sg.loop.config import LoopConfig
from sim2sg.model import ModelConfig, build_model, grad_reverse
from sim2sg.train.config import TrainConfig
from sim2sg.train.steps import DOMAIN_LOSSES, bounded_backward, domain_head_parameters


class Toy(nn.Module):
    """a: reached by both losses; b: by the domain loss only; c: by the labelled loss only;
    domain_image: a domain classifier (one weight)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([3.0]))
        self.c = nn.Parameter(torch.tensor([4.0]))
        self.domain_image = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.domain_image.weight.fill_(5.0)

    def losses(self, lam: float):
        labelled = 0.5 * (self.a ** 2).sum() + 0.5 * self.c.sum() ** 2   # d/da = a, d/dc = c
        z = grad_reverse((10.0 * self.a).sum() + self.b.sum(), lam)      # d/da = -lam*w*10, d/db = -lam*w
        domain = self.domain_image(z.view(1, 1)).sum()                    # d/dw = z
        return labelled, domain


@pytest.mark.parametrize("bound", [0.1, 1.0, 1e6])
def test_bounded_gradient_is_labelled_plus_scaled_grl_term(bound):
    m = Toy()
    labelled, domain = m.losses(lam=1.0)
    s = bounded_backward(m, labelled, domain, bound, clip=0.0)
    g_l = torch.tensor([1.0, 2.0])
    g_d = torch.tensor([-50.0, -50.0])  # -lambda * w * 10 per element
    expect_s = min(1.0, bound * math.sqrt(5.0) / math.sqrt(2 * 50.0 ** 2))
    assert s == pytest.approx(expect_s)
    assert torch.allclose(m.a.grad, g_l + expect_s * g_d)
    assert m.b.grad is None  # only the GRL reaches it: no labelled gradient to bound it by
    assert torch.allclose(m.c.grad, torch.tensor([4.0]))
    assert torch.allclose(m.domain_image.weight.grad, torch.tensor([[33.0]]))  # z = 10 + 20 + 3, unscaled


def test_network_and_domain_heads_are_clipped_apart():
    m = Toy()
    labelled, domain = m.losses(lam=1.0)
    bounded_backward(m, labelled, domain, bound=1.0, clip=1.0)
    net, heads = domain_head_parameters(m)
    norm = lambda ps: math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps if p.grad is not None))  # noqa: E731
    assert norm(net) == pytest.approx(1.0, rel=1e-5)
    assert norm(heads) == pytest.approx(1.0, rel=1e-5)  # 33 alone; joint clipping would leave the net ~0.1


def test_sgg_domain_heads_are_found_and_a_loose_bound_is_the_plain_sum():
    """On the real network: with a bound that never binds, the gradients are those of the summed
    loss; with a tight one, each network tensor's gradient stays within bound x ||g_l|| of g_l."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, num_predicates=4, image_size=(64, 64))
    model = build_model(cfg)
    model.train()
    net, heads = domain_head_parameters(model)
    assert len(heads) == len(list(model.domain_image.parameters()) + list(model.domain_objects.parameters())
                             + list(model.domain_predicates.parameters()))
    assert len(net) + len(heads) == len(list(model.parameters()))
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 20], [30, 30, 50, 60]]), "labels": torch.tensor([1, 2]),
                "relations": torch.tensor([[0, 1, 1]])}] * 2
    target_images = [torch.rand(3, 64, 64) * 0.2 + 0.8 for _ in range(2)]

    def losses():
        torch.manual_seed(1)
        out = model(images, targets, target_images=target_images, align="both", grl_lambda=0.5)
        return (sum(v for k, v in out.items() if k not in DOMAIN_LOSSES),
                sum(v for k, v in out.items() if k in DOMAIN_LOSSES))

    def grads():
        g = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return g

    lab, dom = losses()
    lab.backward()
    g_lab = grads()
    lab, dom = losses()
    (lab + dom).backward()
    g_sum = grads()
    lab, dom = losses()
    bounded_backward(model, lab, dom, bound=1e12, clip=0.0)
    g_loose = grads()
    lab, dom = losses()
    s = bounded_backward(model, lab, dom, bound=0.01, clip=0.0)
    g_tight = grads()
    assert s < 1.0
    head_ids = {id(p) for p in heads}
    changed = 0
    for p, gl, gs, g1, g2 in zip(model.parameters(), g_lab, g_sum, g_loose, g_tight):
        if gs is None:
            continue
        assert float((g1 - gs).norm()) <= 1e-4 * float(gs.norm()) + 1e-8, float((g1 - gs).norm() / gs.norm())
        if id(p) in head_ids or gl is None:
            continue
        assert float((g2 - gl).norm()) <= 0.01 * float(gl.norm()) * (1 + 1e-4) + 1e-9
        changed += not torch.allclose(gs, gl)
    assert changed > 10  # the GRLs do reach the network


def test_negative_bound_is_refused():
    with pytest.raises(InputError, match="grl_bound"):
        TrainConfig(source="s", out="o", grl_bound=-1.0).validate()
    with pytest.raises(InputError, match="grl_bound"):
        LoopConfig(env="clevr", target="t", out="o", grl_bound=-0.5).validate()
