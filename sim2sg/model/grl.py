"""Gradient reversal (Ganin & Lempitsky 2015), as used by Sim2SG's sigma_a and sigma_c,pred.

The layer is the identity in the forward pass and multiplies the incoming gradient by -lambda in
the backward pass, so a domain classifier placed after it is trained to *separate* the domains
while everything before it is trained to make them *indistinguishable*.
"""

from __future__ import annotations

import math

import torch


class GradReverse(torch.autograd.Function):
    """y = x forward; dL/dx = -lambda * dL/dy backward. `lambd` is a Python float (not learned)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = float(lambd)
        # view_as: a new tensor node, so the custom backward is used even for in-place users
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """Apply gradient reversal with weight `lambd` >= 0 to tensor `x` of any shape."""
    return GradReverse.apply(x, lambd)


def dann_lambda(progress: float) -> float:
    """DANN's ramp 2 / (1 + exp(-10 p)) - 1 for progress p in [0, 1] (clipped): 0 at p=0, ~1 at p=1."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def grl_schedule(step: int, total_steps: int, weight: float, warmup_steps: int, ramp: str) -> float:
    """GRL weight at optimizer step `step` (0-based).

    0 during the first `warmup_steps` steps (alignment off: the paper's warm-up, section 4.2);
    afterwards `weight` (ramp="fixed") or `weight * dann_lambda(p)` with p the progress through the
    remaining steps (ramp="dann").
    """
    if step < warmup_steps or weight == 0.0:
        return 0.0
    if ramp == "fixed":
        return float(weight)
    if ramp == "dann":
        span = max(1, total_steps - warmup_steps)
        return float(weight) * dann_lambda((step - warmup_steps) / span)
    raise ValueError(f"unknown GRL ramp {ramp!r} (expected 'fixed' or 'dann')")
