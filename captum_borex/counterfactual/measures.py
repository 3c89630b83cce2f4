"""Measures of counterfactuals: flips, confidence, closeness, locality and a realism proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_borex._checks import check_int
from captum_borex.counterfactual.pixel import target_probability


def distances(inputs: Tensor, counterfactuals: Tensor) -> tuple[Tensor, Tensor]:
    """``(N,)`` L1 and L2 norms of each input's change (summed over all its entries)."""
    change = (counterfactuals - inputs).flatten(1).double()
    return change.abs().sum(1).to(inputs.dtype), change.norm(dim=1).to(inputs.dtype)


def region_change(inputs: Tensor, counterfactuals: Tensor, region: Tensor) -> tuple[Tensor, Tensor]:
    """Mean absolute change per entry inside and outside the region, each ``(N,)``.

    Args:
        inputs: ``(N, C, *spatial)`` inputs.
        counterfactuals: Their counterfactuals, same shape.
        region: Boolean ``(N, 1, *spatial)`` region.

    Returns:
        ``inside, outside``; an empty side gives 0.
    """
    change = (counterfactuals - inputs).abs().double()
    inside = region.expand_as(change).double()
    total_in = inside.flatten(1).sum(1).clamp(min=1)
    total_out = (1 - inside).flatten(1).sum(1).clamp(min=1)
    mean_in = (change * inside).flatten(1).sum(1) / total_in
    mean_out = (change * (1 - inside)).flatten(1).sum(1) / total_out
    return mean_in.to(inputs.dtype), mean_out.to(inputs.dtype)


def flip_rate(
    forward_func: Callable[..., Tensor],
    counterfactuals: Tensor,
    target: Tensor,
    additional_forward_args: Any = None,
) -> float:
    """Share of counterfactuals the model assigns to their ``target`` class ``(N,)``."""
    with torch.no_grad():
        logits = forward_func(counterfactuals, *(additional_forward_args or ()))
    return float((logits.argmax(1) == target.to(logits.device)).double().mean())


def target_confidence(
    forward_func: Callable[..., Tensor],
    counterfactuals: Tensor,
    target: Tensor,
    additional_forward_args: Any = None,
) -> Tensor:
    """``(N,)`` softmax probability of each counterfactual's target."""
    return target_probability(forward_func, counterfactuals, target, additional_forward_args)


def knn_realism(counterfactuals: Tensor, reference: Tensor, k: int = 5) -> Tensor:
    """How far each counterfactual lies from real data, relative to real data itself.

    The mean Euclidean distance from a counterfactual to its ``k`` nearest real images,
    divided by the median of the same quantity for the real images (leaving each one out
    of its own neighbours). About 1: as close to the data as real images are; above 1:
    off the data (adversarial noise raises it). A proxy needing no downloaded weights --
    FID, LPIPS or a classifier two-sample test need a pretrained network -- and fair to any
    data set, as it only uses held-out images of the same kind (pass images the
    classifier was not trained on, ideally of the target class).

    Args:
        counterfactuals: ``(N, C, *spatial)``.
        reference: ``(M, C, *spatial)`` real images, ``M > k``.
        k: Neighbours averaged. Default: 5

    Returns:
        ``(N,)`` ratios.

    Raises:
        ValueError: fewer than ``k + 1`` reference images or mismatched shapes.
    """
    check_int(k, "k")
    if reference.shape[0] <= k or reference.shape[1:] != counterfactuals.shape[1:]:
        raise ValueError(
            f"reference must hold more than k={k} images shaped like the counterfactuals "
            f"{tuple(counterfactuals.shape[1:])}, got {tuple(reference.shape)}"
        )
    ref = reference.flatten(1).double().to(counterfactuals.device)
    own = torch.cdist(ref, ref)
    own.fill_diagonal_(float("inf"))
    scale = own.topk(k, largest=False).values.mean(1).median()
    dist = torch.cdist(counterfactuals.flatten(1).double(), ref)
    knn = dist.topk(k, largest=False).values.mean(1)
    return (knn / scale.clamp(min=torch.finfo(torch.float64).tiny)).to(counterfactuals.dtype)
