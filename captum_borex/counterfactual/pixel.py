"""The pixel stage: a PGD-style attack toward the target, confined to the region."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from torch import Tensor

from captum_borex._forward import rows_of_args


def pruned_direction(grad: Tensor, region: Tensor, keep: float) -> Tensor:
    """The gradient inside ``region`` pruned to its largest entries, scaled to max-abs 1.

    The pruning of the CAMERAS focused attack: per input, only the ``ceil(keep * m)``
    entries of largest magnitude among the ``m`` entries inside the region are kept, the
    rest set to zero, so each step touches the pixels the model is most sensitive to.

    Args:
        grad: ``(N, C, *spatial)`` gradient.
        region: Boolean ``(N, 1, *spatial)`` region (broadcast over channels).
        keep: Share of the region's entries kept, in (0, 1].

    Returns:
        ``(N, C, *spatial)``: zero outside the region, largest entry of each input +-1
        (all zero where the gradient inside the region vanishes).
    """
    inside = torch.where(region, grad, torch.zeros_like(grad)).flatten(1)
    count = region.expand_as(grad).flatten(1).sum(1)
    k = (count.double() * keep).ceil().clamp(min=1).long()
    largest = inside.abs().topk(int(k.max().clamp(max=inside.shape[1])), dim=1).values
    threshold = largest.gather(1, (k - 1).clamp(max=largest.shape[1] - 1)[:, None])
    pruned = torch.where(inside.abs() >= threshold, inside, torch.zeros_like(inside))
    scale = pruned.abs().amax(1, keepdim=True)
    pruned = pruned / torch.where(scale > 0, scale, torch.ones_like(scale))
    return pruned.view_as(grad)


def target_loss(
    forward_func: Callable[..., Tensor], x: Tensor, target: Tensor, args: Any
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy toward ``target`` and the target's probability, per input."""
    logits = forward_func(x, *(args or ()))
    loss = F.cross_entropy(logits, target, reduction="sum")
    prob = torch.softmax(logits.detach(), 1).gather(1, target[:, None])[:, 0]
    return loss, prob


def pixel_attack(
    forward_func: Callable[..., Tensor],
    start: Tensor,
    target: Tensor,
    region: Tensor,
    additional_forward_args: Any,
    n_iter: int,
    step_size: float,
    keep: float,
    confidence: float,
    bounds: tuple[float, float] | None,
    show_progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Move ``start`` toward ``target`` inside ``region`` until the target is confident.

    Each step computes the gradient of the cross-entropy toward the target, prunes it with
    :func:`pruned_direction` and moves the kept entries by at most ``step_size`` (the
    largest by exactly that), clipped to ``bounds`` inside the region. An input stops once
    its target probability reaches ``confidence``; nothing outside the region moves. With
    ``bounds``, entries already at a bound that the step would push further are left out
    before pruning, so the kept entries are ones that can still move.

    Returns:
        The edited inputs and ``(N,)`` the number of steps each one took.
    """
    x = start.detach().clone()
    steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    iterations = range(n_iter)
    for _ in progress(iterations, desc="Counterfactual") if show_progress else iterations:
        rows = active.nonzero()[:, 0]
        if len(rows) == 0:
            break
        x_rows = x[rows].requires_grad_(True)
        args = rows_of_args(additional_forward_args, rows, x.shape[0])
        with torch.enable_grad():
            loss, prob = target_loss(forward_func, x_rows, target[rows], args)
            (grad,) = torch.autograd.grad(loss, x_rows)
        going = prob < confidence
        active[rows[~going]] = False
        rows, x_rows, grad = rows[going], x_rows[going].detach(), grad[going]
        if bounds is not None:
            grad = _unblocked(grad, x_rows, bounds)
        moved = x_rows - step_size * pruned_direction(grad, region[rows], keep)
        if bounds is not None:
            moved = torch.where(region[rows], moved.clamp(*bounds), moved)
        x[rows] = moved
        steps[rows] += 1
    return x, steps


def _unblocked(grad: Tensor, x: Tensor, bounds: tuple[float, float]) -> Tensor:
    """``grad`` with entries zeroed where a descent step would push ``x`` past ``bounds``
    (so pruning keeps entries that can still move)."""
    blocked = ((x <= bounds[0]) & (grad > 0)) | ((x >= bounds[1]) & (grad < 0))
    return torch.where(blocked, torch.zeros_like(grad), grad)


def target_probability(
    forward_func: Callable[..., Tensor], x: Tensor, target: Tensor, args: Any
) -> Tensor:
    """``(N,)`` the softmax probability of ``target`` for each input (no gradients)."""
    with torch.no_grad():
        logits = forward_func(x, *(args or ()))
    return torch.softmax(logits, 1).gather(1, target[:, None])[:, 0]


def check_share(value: Any, name: str) -> float:
    """``value`` as a float if it is a number in (0, 1], else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(value).__name__}")
    if not 0 < value <= 1 or math.isnan(value):
        raise ValueError(f"{name} must be in (0, 1] (a share of the pixels), got {value}")
    return float(value)
