"""Turning any prior (attribution method, tensor, callable, None) into one map per input."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType
from captum.attr import Attribution
from torch import Tensor

from captum_borex._checks import check_finite

#: How channel maps ``(N, C, ...)`` become one value per pixel.
ChannelReduction = str | Callable[[Tensor], Tensor]
REDUCTIONS = ("sum", "mean", "abs_sum", "max_abs", "l2")
PriorType = Attribution | Tensor | Callable[..., Any] | None


def compute_prior(
    prior: PriorType,
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    prior_kwargs: dict[str, Any] | None,
    reduction: ChannelReduction,
) -> Tensor:
    """The prior as ``(N, *spatial)`` maps for ``inputs (N, C, *spatial)``.

    Args:
        prior: A Captum attribution (its ``attribute`` is called with ``target``,
            ``additional_forward_args`` and ``prior_kwargs``), a tensor of maps, a callable
            ``(inputs, target) -> maps`` (called with ``prior_kwargs`` as keywords), or None
            (a flat prior).
        inputs: The batch being explained.
        target: Captum target.
        additional_forward_args: Extra forward arguments for the model.
        prior_kwargs: Extra keyword arguments for the prior.
        reduction: How channel maps become one value per pixel.

    Raises:
        ValueError: the prior fails, or its maps do not fit the inputs.
    """
    spatial = inputs.shape[2:]
    if prior is None:
        return torch.zeros(inputs.shape[0], *spatial, dtype=inputs.dtype, device=inputs.device)
    kwargs = dict(prior_kwargs or {})
    if isinstance(prior, Tensor):
        maps, source = prior, "prior tensor"
    elif isinstance(prior, Attribution):
        source = f"prior {type(prior).__name__}"
        if additional_forward_args is not None:
            kwargs.setdefault("additional_forward_args", additional_forward_args)
        try:
            with torch.enable_grad():
                maps = prior.attribute(inputs, target=target, **kwargs)
        except Exception as err:
            raise ValueError(
                f"{source}.attribute failed: {type(err).__name__}: {err}{_missing_hint(err)}"
            ) from err
    elif callable(prior):
        source = "prior callable"
        try:
            with torch.enable_grad():
                maps = prior(inputs, target, **kwargs)
        except Exception as err:
            raise ValueError(
                f"{source} failed: {type(err).__name__}: {err}{_missing_hint(err)}"
            ) from err
    else:
        raise TypeError(
            "prior must be a Captum attribution, a tensor, a callable or None, "
            f"got {type(prior).__name__}"
        )
    return to_pixel_maps(maps, inputs, reduction, source)


def _missing_hint(err: Exception) -> str:
    """Advice for a prior called without an argument it requires."""
    missing = re.findall(r"'(\w+)'", str(err)) if "required" in str(err) else []
    if not isinstance(err, TypeError) or not missing:
        return ""
    example = "(3, 16, 16)" if missing[0] == "sliding_window_shapes" else "..."
    return (
        f"; pass it through prior_kwargs, e.g. prior_kwargs={{{missing[0]!r}: {example}}} "
        "(an argument of attribute, of BORExCallback and of ExplanationWriter)"
    )


def to_pixel_maps(maps: Any, inputs: Tensor, reduction: ChannelReduction, source: str) -> Tensor:
    """Maps of any accepted layout as ``(N, *spatial)``, detached, on the inputs' device.

    Accepted: ``(N, *spatial)``, ``(N, 1, *spatial)``, input-shaped ``(N, C, *spatial)``
    (reduced over channels), and layer maps ``(N, 1, *smaller)`` (upsampled linearly).
    """
    if isinstance(maps, tuple) and len(maps) == 1:
        maps = maps[0]
    if not isinstance(maps, Tensor):
        raise ValueError(f"{source} must give a tensor, got {type(maps).__name__}")
    maps = maps.detach().to(device=inputs.device, dtype=inputs.dtype)
    n, channels, spatial = inputs.shape[0], inputs.shape[1], tuple(inputs.shape[2:])
    shape = tuple(maps.shape)
    expected = (
        f"(N, *spatial) = {(n, *spatial)}, (N, 1, *spatial), the inputs' shape "
        f"{(n, channels, *spatial)}, or a layer map (N, 1, ...)"
    )
    if maps.dim() == len(spatial) + 1 and shape == (n, *spatial):
        out = maps
    elif maps.dim() == len(spatial) + 2 and shape[0] == n and shape[2:] == spatial:
        out = maps[:, 0] if shape[1] == 1 else _reduce_channels(maps, reduction, source)
        if shape[1] not in (1, channels):
            raise ValueError(f"{source} has shape {shape}; expected {expected}")
    elif maps.dim() == len(spatial) + 2 and shape[0] == n and shape[1] == 1:
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        out = F.interpolate(maps, size=spatial, mode=mode, align_corners=False)[:, 0]
    else:
        raise ValueError(f"{source} has shape {shape}; expected {expected}")
    check_finite(out, source)
    return out.contiguous()


def _reduce_channels(maps: Tensor, reduction: ChannelReduction, source: str) -> Tensor:
    if callable(reduction):
        return reduction(maps)
    if reduction == "sum":
        return maps.sum(1)
    if reduction == "mean":
        return maps.mean(1)
    if reduction == "abs_sum":
        return maps.abs().sum(1)
    if reduction == "max_abs":
        return maps.abs().amax(1)
    if reduction == "l2":
        return maps.pow(2).sum(1).sqrt()
    raise ValueError(
        f"prior_reduction must be one of {REDUCTIONS} or a callable, got {reduction!r}"
    )


def normalise_prior(maps: Tensor, scale: float) -> Tensor:
    """The published normalisation ``P * scale / mean(|P|)`` per map (flat maps stay 0)."""
    flat = maps.reshape(maps.shape[0], -1)
    mean_abs = flat.abs().mean(1)
    factor = torch.where(
        mean_abs > 0, scale / mean_abs.clamp(min=torch.finfo(maps.dtype).tiny), 0.0
    )
    return maps * factor.view(-1, *([1] * (maps.dim() - 1)))
