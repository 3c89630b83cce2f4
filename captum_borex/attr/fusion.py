"""Fusing several saliency maps of the same inputs into one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_borex._checks import check_finite, check_positive
from captum_borex._ranks import average_ranks


def rank_fusion(
    maps: Sequence[Tensor | tuple[Tensor]], weights: Sequence[float] | None = None
) -> Tensor | tuple[Tensor]:
    r"""Fuse maps of the same inputs by each value's weighted mean rank within its input.

    Every map is turned into ranks per input (the first dimension): each value's rank among
    all values of that input, 0 for the lowest and 1 for the highest, tied values sharing
    their mean rank. The fused map is the weighted mean of those ranks, so it lies in
    [0, 1] and puts first the values that all maps put high. Only the order within each
    map counts: scales, offsets and signs of agreement between methods do not, which is
    what deletion and insertion measure too. BOREx's ``map_from`` fuses its kinds of
    evidence this way.

    Args:
        maps: One or more tensors of the same shape ``(N, ...)`` on the same device, e.g.
            attributions of the same ``N`` inputs by several methods or BOREx's
            ``BORExDetails.evidence_maps``; finite values. A map may also be a tuple
            holding one tensor, as Captum returns for a tuple of one input.
        weights: One positive weight per map. None weights all maps alike.
            Default: None

    Returns:
        The fused map, shaped like each map, in the first map's floating dtype (float64 if
        it is not floating); a tuple of one tensor if the first map was one.

    Raises:
        TypeError: ``maps`` is not a sequence of tensors, or a weight is not a number.
        ValueError: no maps, maps of different shapes or devices or with NaN or Inf, a
            weight that is not positive, or not one weight per map.

    Examples::

        >>> from captum.attr import Occlusion
        >>> from captum_borex import BOREx
        >>> from captum_borex.attr import rank_fusion
        >>> occlusion = Occlusion(model).attribute(
        ...     images, target=labels, sliding_window_shapes=(3, 16, 16), strides=8
        ... )
        >>> refined = BOREx(model).attribute(images, target=labels)
        >>> fused = rank_fusion([refined, occlusion], weights=[2, 1])
    """
    if isinstance(maps, Tensor) or not isinstance(maps, Sequence):
        raise TypeError(f"maps must be a sequence of tensors, got {type(maps).__name__}")
    if len(maps) == 0:
        raise ValueError("maps must hold at least one tensor, got none")
    is_tuple = isinstance(maps[0], tuple)
    tensors = [_unwrapped(m, f"maps[{i}]") for i, m in enumerate(maps)]
    first = tensors[0]
    for i, m in enumerate(tensors):
        if m.dim() == 0:
            raise ValueError(f"maps[{i}] must have a first dimension of inputs, got a scalar")
        if m.shape != first.shape or m.device != first.device:
            raise ValueError(
                f"maps[{i}] has shape {tuple(m.shape)} on {m.device} but maps[0] has "
                f"{tuple(first.shape)} on {first.device}; all maps must match"
            )
        check_finite(m, f"maps[{i}]")
    if weights is None:
        weights = [1.0] * len(maps)
    if isinstance(weights, Tensor):
        weights = weights.tolist()
    if not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of numbers, got {type(weights).__name__}")
    if len(weights) != len(maps):
        raise ValueError(f"weights must hold one number per map ({len(maps)}), got {len(weights)}")
    factors = [check_positive(w, f"weights[{i}]") for i, w in enumerate(weights)]
    fused = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
    for m, w in zip(tensors, factors):
        flat = m.detach().reshape(m.shape[0], -1)
        ranks = average_ranks(flat) / max(flat.shape[1] - 1, 1)
        fused += w * ranks.view(m.shape)
    fused /= sum(factors)
    out = fused.to(first.dtype if first.is_floating_point() else torch.float64)
    return (out,) if is_tuple else out


def _unwrapped(value: object, name: str) -> Tensor:
    """``value`` itself if a tensor, its one tensor if a tuple of one, else a TypeError."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} must be a tensor or a tuple of one tensor, got {type(value).__name__}"
        )
    return value
