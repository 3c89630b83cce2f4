"""Picking the region a counterfactual may change: a compact blob at the top of a map."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex.attr._priors import ChannelReduction, compute_prior

#: Maps are smoothed with a box of this share of the expected region's side before ranking.
SMOOTHING = 0.5


def check_saliency(saliency: Any) -> None:
    """A TypeError unless ``saliency`` is an attribution object, a tensor or a callable."""
    if isinstance(saliency, Tensor) or callable(getattr(saliency, "attribute", None)):
        return
    if callable(saliency) and not isinstance(saliency, (str, bytes)):
        return
    raise TypeError(
        "saliency must be an object with Captum's attribute(inputs, target=...) (a Captum "
        "attribution, BOREx, CAMERAS, RISE), a tensor of maps or a callable "
        f"(inputs, target) -> maps; got {type(saliency).__name__}"
    )


def saliency_maps(
    saliency: Any,
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any = None,
    saliency_kwargs: dict[str, Any] | None = None,
    reduction: ChannelReduction = "sum",
) -> Tensor:
    """The saliency as one map per input, ``(N, *spatial)`` (see BOREx's priors).

    Args:
        saliency: As for :class:`RegionCounterfactual`.
        inputs: ``(N, C, *spatial)`` inputs.
        target: The class each map explains.
        additional_forward_args: Passed to attribution objects' ``attribute``.
        saliency_kwargs: Extra keywords for ``attribute`` or the callable. Default: None
        reduction: How input-shaped maps become one value per pixel. Default: "sum"

    Raises:
        TypeError: ``saliency`` has no usable type.
        ValueError: the saliency fails or its maps do not fit the inputs.
    """
    check_saliency(saliency)
    prior: Any = saliency
    if not isinstance(saliency, Tensor) and hasattr(saliency, "attribute"):
        prior = _attribute_caller(saliency, additional_forward_args)
    return compute_prior(prior, inputs, target, None, saliency_kwargs, reduction)


def _attribute_caller(method: Any, additional_forward_args: Any) -> Callable[..., Any]:
    """``method.attribute`` as a callable ``(inputs, target, **kwargs)``."""

    def call(inputs: Tensor, target: TargetType, **kwargs: Any) -> Any:
        if additional_forward_args is not None:
            kwargs.setdefault("additional_forward_args", additional_forward_args)
        return method.attribute(inputs, target=target, **kwargs)

    return call


def select_region(maps: Tensor, region: float) -> Tensor:
    """A compact region holding ``region`` of the pixels (voxels), grown from each map's top.

    The map is first smoothed with a box filter whose side is half the side of a square
    region of that size (so isolated high pixels do not win over a salient blob), then
    grown from its maximum: the neighbour (4-connected for images, 6 for clips) with the
    highest smoothed value joins next, ties going to the pixel nearest the start. The region
    is therefore one connected blob that follows the map, and for a flat map a disc.

    Args:
        maps: ``(N, *spatial)`` saliency maps (higher = more salient).
        region: Share of pixels in the region, in (0, 1].

    Returns:
        Boolean ``(N, 1, *spatial)``, exactly ``max(1, round(region * pixels))`` True per input.
    """
    spatial = tuple(maps.shape[1:])
    n_pixels = math.prod(spatial)
    size = max(1, round(region * n_pixels))
    smooth = _box_smooth(maps.double(), region).cpu().numpy()
    out = np.zeros((maps.shape[0], n_pixels), dtype=bool)
    for i, values in enumerate(smooth):
        out[i, _grow(values, size)] = True
    return torch.from_numpy(out).view(maps.shape[0], 1, *spatial).to(maps.device)


def _box_smooth(maps: Tensor, region: float) -> Tensor:
    """Box-filtered maps (odd kernel, borders averaged over the pixels inside)."""
    spatial = maps.shape[1:]
    side = region ** (1 / len(spatial)) * (math.prod(spatial) ** (1 / len(spatial)))
    kernel = max(1, int(SMOOTHING * side) // 2 * 2 + 1)
    if kernel == 1:
        return maps
    pool = F.avg_pool2d if len(spatial) == 2 else F.avg_pool3d
    sizes = [min(kernel, s if s % 2 else s - 1) for s in spatial]
    return pool(
        maps[:, None],
        kernel_size=sizes,
        stride=1,
        padding=[k // 2 for k in sizes],
        count_include_pad=False,
    )[:, 0]


def _start(values: np.ndarray) -> int:
    """Flat index of the maximum of ``values``; among ties, the one nearest the centre."""
    tied = np.flatnonzero(values.reshape(-1) == values.max())
    coords = np.stack(np.unravel_index(tied, values.shape), 1)
    centre = (np.array(values.shape) - 1) / 2
    return int(tied[np.argmin(((coords - centre) ** 2).sum(1))])


def _grow(values: np.ndarray, size: int) -> np.ndarray:
    """Flat indices of ``size`` connected pixels grown from the maximum of ``values``."""
    shape = values.shape
    flat = values.reshape(-1).tolist()
    start = _start(values)
    origin = np.unravel_index(start, shape)
    steps = [d for d in itertools.product((-1, 0, 1), repeat=len(shape)) if sum(map(abs, d)) == 1]
    strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]
    seen, chosen = {start}, []
    heap = [(-flat[start], 0, start, tuple(origin))]
    while heap and len(chosen) < size:
        _, _, index, position = heapq.heappop(heap)
        chosen.append(index)
        for step in steps:
            nb = tuple(p + d for p, d in zip(position, step))
            if any(c < 0 or c >= s for c, s in zip(nb, shape)):
                continue
            j = sum(c * st for c, st in zip(nb, strides))
            if j not in seen:
                seen.add(j)
                dist = sum((c - o) ** 2 for c, o in zip(nb, origin))
                heapq.heappush(heap, (-flat[j], dist, j, nb))
    return np.asarray(chosen, dtype=np.int64)
