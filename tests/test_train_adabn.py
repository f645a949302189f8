"""Target BatchNorm statistics (AdaBN): exact averages, training statistics restored."""

import torch
from torch import nn

from sim2sg.train.adabn import target_batchnorm


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 1, 1))
    m.train()
    for _ in range(3):  # some training statistics to restore later
        m(torch.randn(4, 2, 5, 5))
    return m


def test_statistics_are_the_average_over_target_batches_and_restored_after():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 2, 5, 5, generator=g) * 3 + 2 for _ in range(3)]
    bn = m[1]
    with target_batchnorm(m, m, batches) as n:
        assert n == 3 and not m.training and not bn.training
        feats = [m[0](b) for b in batches]
        mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
        var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
        torch.testing.assert_close(bn.running_mean, mean)
        torch.testing.assert_close(bn.running_var, var)
        # the output is normalised with those statistics: per-channel mean ~0 on the target data
        z = torch.cat([bn(f) for f in feats])
        torch.testing.assert_close(z.mean((0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)
    assert m.training and bn.momentum == 0.1
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_no_target_batches_keeps_the_model_statistics():
    m = _model()
    before = m[1].running_mean.clone()
    with target_batchnorm(m, m, []) as n:
        assert n == 0 and torch.equal(m[1].running_mean, before)


def test_weights_get_no_gradient_and_an_error_still_restores():
    m = _model()
    before = m[1].running_var.clone()
    try:
        with target_batchnorm(m, m, [torch.randn(2, 2, 5, 5)]):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.equal(m[1].running_var, before) and m.training
    assert all(p.grad is None for p in m.parameters())
