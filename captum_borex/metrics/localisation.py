"""Localisation against ground-truth masks: pointing game and energy pointing game."""

from __future__ import annotations

import torch
from torch import Tensor


def _maps_and_masks(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Saliency ``(N, *spatial)`` (channels summed) and boolean masks of the same shape."""
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if not isinstance(attributions, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("attributions and masks must be tensors")
    if masks.dim() >= 3 and masks.shape[1] == 1 and masks.dim() >= attributions.dim():
        masks = masks[:, 0]
    if attributions.dim() == masks.dim() + 1:
        attributions = attributions.sum(1)
    if attributions.shape != masks.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match attributions of shape "
            f"{tuple(attributions.shape)}; expected masks (N, *spatial) or (N, 1, *spatial)"
        )
    return attributions, masks.bool()


def pointing_game(attributions: Tensor, masks: Tensor, tolerance: float = 15) -> Tensor:
    """Pointing game (Zhang et al., 2016): is the map's maximum on the object?

    A hit when the most salient pixel lies within ``tolerance`` pixels (Euclidean) of the
    ground-truth mask. Images whose mask is empty count as misses.

    Args:
        attributions: ``(N, C, *spatial)``, ``(N, 1, *spatial)`` or ``(N, *spatial)``
            maps (channels summed).
        masks: ``(N, *spatial)`` or ``(N, 1, *spatial)`` ground-truth masks.
        tolerance: Distance in pixels within which the maximum still counts. Default: 15

    Returns:
        ``(N,)`` boolean hits; ``.float().mean()`` is the hit rate.

    Examples::

        >>> pointing_game(attributions, masks, tolerance=2).float().mean()
    """
    maps, masks = _maps_and_masks(attributions, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    batch, spatial = maps.shape[0], maps.shape[1:]
    peak = torch.stack(torch.unravel_index(maps.flatten(1).argmax(1), spatial), 1)  # (N, D)
    grids = torch.meshgrid(*(torch.arange(s, device=maps.device) for s in spatial), indexing="ij")
    coords = torch.stack(grids, -1).reshape(-1, len(spatial))  # (P, D)
    distance = torch.cdist(
        peak.double().unsqueeze(1), coords.double().unsqueeze(0).expand(batch, -1, -1)
    )[:, 0]
    distance = distance.masked_fill(~masks.flatten(1), float("inf"))
    return distance.amin(1) <= tolerance


def energy_pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """Energy pointing game (Wang et al., Score-CAM, 2020): positive saliency share on the object.

    Args:
        attributions: Maps as in :func:`pointing_game`; negative values are clipped to 0.
        masks: Ground-truth masks as in :func:`pointing_game`.

    Returns:
        ``(N,)`` fraction in [0, 1] (0 for an all-non-positive map).

    Examples::

        >>> energy_pointing_game(attributions, masks).mean()
    """
    maps, masks = _maps_and_masks(attributions, masks)
    positive = maps.clamp(min=0).flatten(1)
    total = positive.sum(1)
    inside = (positive * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(positive.dtype).tiny), 0.0)
