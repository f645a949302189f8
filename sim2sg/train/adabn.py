"""Target BatchNorm statistics (AdaBN; Li et al., "Revisiting Batch Normalization for Practical
Domain Adaptation", 2016) for predicting on unlabelled target images.

A backbone trained from scratch on synthetic images normalises every layer with the *synthetic*
images' feature statistics (BatchNorm running mean and variance). Target images of another
appearance (texture, colour, blur) have other statistics, so every layer's input is shifted and
scaled wrongly there. Re-estimating only those statistics on unlabelled target images - no labels,
no gradient, the weights untouched - removes that first-order part of the appearance gap at
inference. Training is not affected: `target_batchnorm` restores the training statistics on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def target_batchnorm(model: nn.Module, forward: Callable[[object], object], batches: Iterable) -> Iterator[int]:
    """Inside the block, `model`'s BatchNorm layers normalise with statistics of the target data:
    `forward(batch)` is called (no gradient, every other layer in eval mode) for each of `batches`,
    and each BatchNorm's running mean / variance become the plain average of its per-batch mean /
    (unbiased) variance over those calls (momentum None). Yields the number of batches seen (0:
    the model's own statistics stay). On exit the training statistics, momenta and the model's
    train/eval mode are restored exactly."""
    bns = batchnorm_layers(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in bns]
    was_training = model.training
    n = 0
    try:
        model.eval()
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average: every batch counts alike
                m.train()
            with torch.no_grad():
                for b in batches:
                    forward(b)
                    n += 1
            for m in bns:
                m.eval()
            if n == 0:  # nothing seen: keep the model's own statistics rather than the reset ones
                for m, (mean, var, count, _) in zip(bns, saved):
                    m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        yield n
    finally:
        for m, (mean, var, count, momentum) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        model.train(was_training)
