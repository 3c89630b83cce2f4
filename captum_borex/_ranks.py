"""Ranks of values: with ties given their average rank, or in descending order with ties
broken by position."""

from __future__ import annotations

import torch
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``0 .. P-1`` (float64) of each row of ``(N, P)`` values, ties given their
    average rank."""
    batch, size = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    groups = starts.long().cumsum(1) - 1
    groups = (groups + torch.arange(batch, device=values.device)[:, None] * size).flatten()
    positions = torch.arange(size, dtype=torch.float64, device=values.device).repeat(batch)
    sums = torch.zeros(batch * size, dtype=torch.float64, device=values.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(0, groups, positions)
    counts.scatter_add_(0, groups, torch.ones_like(positions))
    mean_position = (sums / counts.clamp(min=1))[groups].view(batch, size)
    return torch.empty_like(mean_position).scatter_(1, order, mean_position)


def descending_ranks(values: Tensor) -> Tensor:
    """Rank ``0 .. P-1`` (long) of each element of each row of ``(N, P)`` values, highest
    first, ties broken by position (the order deletion and insertion curves read a map in)."""
    batch, size = values.shape
    order = torch.argsort(values, dim=1, descending=True, stable=True)
    positions = torch.arange(size, device=values.device).expand(batch, -1)
    return torch.empty_like(order).scatter_(1, order, positions)
