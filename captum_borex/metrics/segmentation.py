"""Localisation curves: precision and recall of the top-k salient pixels against masks.

The BOREx paper (Kikuchi et al., ACCV 2022) judges maps against segmentation masks by
binarising them at several thresholds and averaging precision and recall over the
thresholds. Here a threshold is a share of the image: the top ``k = fraction * P`` pixels
(``P`` pixels per map) form the predicted region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_borex.metrics.localisation import _maps_and_masks

#: Default shares of the image taken as the predicted region: 0.05, 0.10, ..., 1.0.
DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 21))


@dataclass
class SegmentationCurves:
    """Precision and recall of the top-k pixels of each map, at every fraction.

    Attributes:
        fractions: ``(K,)`` share of the image taken as the predicted region.
        k: ``(K,)`` number of pixels taken at each fraction (``round(fraction * P)``, at
            least 1).
        precision: ``(N, K)`` share of the top-k pixels inside the mask (in the maps'
            floating dtype).
        recall: ``(N, K)`` share of the mask covered by the top-k pixels (0 for an empty
            mask).
        mean_precision: ``(N,)`` precision averaged over the fractions.
        mean_recall: ``(N,)`` recall averaged over the fractions.
    """

    fractions: Tensor
    k: Tensor
    precision: Tensor
    recall: Tensor
    mean_precision: Tensor
    mean_recall: Tensor


def _check_fractions(fractions: Sequence[float] | Tensor | None, device: torch.device) -> Tensor:
    """Fractions as a float64 tensor of values in (0, 1]; a clear error otherwise."""
    if fractions is None:
        fractions = DEFAULT_FRACTIONS
    if isinstance(fractions, (int, float)) or not isinstance(fractions, (Sequence, Tensor)):
        raise TypeError(
            f"fractions must be a sequence or 1-D tensor of numbers, got {type(fractions).__name__}"
        )
    values = torch.as_tensor(fractions, dtype=torch.float64, device=device)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(
            f"fractions must be a non-empty 1-D sequence, got shape {tuple(values.shape)}"
        )
    if not bool(((values > 0) & (values <= 1)).all()):
        raise ValueError(f"fractions must lie in (0, 1], got {values.tolist()}")
    return values


def _matching_masks(attributions: Tensor, masks: Tensor) -> Tensor:
    """Masks ``(N, 1, *spatial)`` given with channel-less maps ``(N, *spatial)``, squeezed."""
    if (
        isinstance(attributions, Tensor)
        and isinstance(masks, Tensor)
        and masks.dim() == attributions.dim() + 1
        and masks.shape[1] == 1
    ):
        return masks[:, 0]
    return masks


def segmentation_curves(
    attributions: Tensor,
    masks: Tensor,
    fractions: Sequence[float] | Tensor | None = None,
) -> SegmentationCurves:
    r"""Precision / recall curves of the top-k salient pixels against ground-truth masks.

    For every fraction ``f`` the ``k = round(f * P)`` most salient pixels of a map
    (``P`` pixels; ties broken by pixel order) are the predicted region, and

    - precision(f) = |top-k ∩ mask| / k,
    - recall(f) = |top-k ∩ mask| / |mask|.

    ``mean_precision`` and ``mean_recall`` average the curves over the fractions (the
    segmentation measures of the BOREx paper). Higher is better for both. Works for
    images and clips alike: a "pixel" is any position after the channel axis.

    Args:
        attributions: ``(N, C, *spatial)``, ``(N, 1, *spatial)`` or ``(N, *spatial)`` maps
            (channels summed), with ``spatial`` = ``(H, W)`` or ``(T, H, W)``.
        masks: ``(N, *spatial)`` or ``(N, 1, *spatial)`` ground-truth masks (non-zero =
            object). An empty mask gives recall 0 and precision 0.
        fractions: Shares of the image in (0, 1] taken as the predicted region.
            Default: None (0.05, 0.10, ..., 1.0)

    Returns:
        :class:`SegmentationCurves` with per-image curves ``(N, K)`` and means ``(N,)``.

    Raises:
        TypeError: attributions or masks are not tensors, or fractions is not a sequence.
        ValueError: masks do not match the maps, or fractions fall outside (0, 1].

    Examples::

        >>> curves = segmentation_curves(attributions, masks)
        >>> curves.mean_precision.mean(), curves.mean_recall.mean()
    """
    maps, masks = _maps_and_masks(attributions, _matching_masks(attributions, masks))
    values = _check_fractions(fractions, maps.device)
    flat_maps, flat_masks = maps.flatten(1), masks.flatten(1)
    n_pixels = flat_maps.shape[1]
    k = torch.round(values * n_pixels).long().clamp(min=1)
    order = torch.argsort(flat_maps, dim=1, descending=True, stable=True)
    hits = flat_masks.gather(1, order).to(torch.float64).cumsum(1)[:, k - 1]  # (N, K)
    area = flat_masks.sum(1, keepdim=True).to(torch.float64)
    precision = hits / k.to(torch.float64)
    recall = torch.where(area > 0, hits / area.clamp(min=1), 0.0)
    dtype = maps.dtype if maps.is_floating_point() else torch.float64
    precision, recall = precision.to(dtype), recall.to(dtype)
    return SegmentationCurves(
        fractions=values,
        k=k,
        precision=precision,
        recall=recall,
        mean_precision=precision.mean(1),
        mean_recall=recall.mean(1),
    )
