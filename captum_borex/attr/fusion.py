"""Fusing several saliency maps of the same inputs into one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_borex._checks import check_finite, check_positive
from captum_borex._ranks import average_ranks


def rank_fusion(maps: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    r"""Fuse maps of the same inputs by each value's weighted mean rank within its input.

    Every map is turned into ranks per input (the first dimension): each value's rank among
    all values of that input, 0 for the lowest and 1 for the highest, tied values sharing
    their mean rank. The fused map is the weighted mean of those ranks, so it lies in
    [0, 1] and puts first the values that all maps put high. Only the order within each
    map counts: scales, offsets and signs of agreement between methods do not, which is
    what deletion and insertion measure too. BOREx's ``map_from`` fuses its kinds of
    evidence this way.

    Args:
        maps: One or more tensors of the same shape ``(N, ...)``, e.g. attributions of
            the same ``N`` inputs by several methods or BOREx's
            ``BORExDetails.evidence_maps``; finite values.
        weights: One positive weight per map. None weights all maps alike.
            Default: None

    Returns:
        The fused map, shaped like each map, in the first map's floating dtype (float64 if
        it is not floating).

    Raises:
        TypeError: ``maps`` is not a sequence of tensors, or a weight is not a number.
        ValueError: no maps, maps of different shapes or with NaN or Inf, a weight that is
            not positive, or as many weights as maps.

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
    for i, m in enumerate(maps):
        if not isinstance(m, Tensor):
            raise TypeError(f"maps[{i}] must be a tensor, got {type(m).__name__}")
        if m.dim() == 0:
            raise ValueError(f"maps[{i}] must have a first dimension of inputs, got a scalar")
        if m.shape != maps[0].shape:
            raise ValueError(
                f"maps[{i}] has shape {tuple(m.shape)} but maps[0] has {tuple(maps[0].shape)}; "
                "all maps must have the same shape"
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
    first = maps[0]
    fused = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
    for m, w in zip(maps, factors):
        flat = m.detach().reshape(m.shape[0], -1)
        ranks = average_ranks(flat) / max(flat.shape[1] - 1, 1)
        fused += w * ranks.view(m.shape)
    fused /= sum(factors)
    return fused.to(first.dtype if first.is_floating_point() else torch.float64)
