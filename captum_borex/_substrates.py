"""What removed pixels become in deletion / insertion: zeros, a blur, a constant, ..."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_borex._checks import check_finite

Substrate = str | float | Tensor | Callable[[Tensor], Tensor]
NAMED = ("zeros", "blur", "mean")


def gaussian_blur(inputs: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Gaussian blur over the last two (spatial) axes, reflect-padded.

    Args:
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` (each frame blurred on its own).
        kernel_size: Odd kernel width. Default: 11 (as in RISE)
        sigma: Standard deviation in pixels. Default: 5.0 (as in RISE)
    """
    offsets = torch.arange(kernel_size, dtype=inputs.dtype, device=inputs.device) - kernel_size // 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    shape = inputs.shape
    frames = inputs.reshape(-1, 1, *shape[-2:])
    pad = kernel_size // 2
    mode = "reflect" if min(shape[-2:]) > pad else "replicate"
    frames = F.conv2d(F.pad(frames, (pad, pad, 0, 0), mode=mode), weights.view(1, 1, 1, -1))
    frames = F.conv2d(F.pad(frames, (0, 0, pad, pad), mode=mode), weights.view(1, 1, -1, 1))
    return frames.reshape(shape)


def make_substrate(substrate: Substrate, inputs: Tensor, name: str = "substrate") -> Tensor:
    """The fully "removed" version of ``inputs`` for a substrate specification.

    Args:
        substrate: "zeros", "blur" (:func:`gaussian_blur`), "mean" (each image's channel
            means), a number, a tensor broadcastable to the inputs, or a callable
            ``inputs -> tensor``.
        inputs: The batch.
        name: Argument name for error messages.

    Raises:
        ValueError: an unknown name, a shape that does not broadcast, or NaN / Inf values.
        TypeError: a substrate of another type.
    """
    out = _substrate(substrate, inputs, name)
    check_finite(out, name)
    return out


def _substrate(substrate: Substrate, inputs: Tensor, name: str) -> Tensor:
    """:func:`make_substrate` before the finiteness check."""
    if isinstance(substrate, str):
        if substrate == "zeros":
            return torch.zeros_like(inputs)
        if substrate == "blur":
            return gaussian_blur(inputs)
        if substrate == "mean":
            dims = tuple(range(2, inputs.dim()))
            return inputs.mean(dims, keepdim=True).expand_as(inputs)
        raise ValueError(
            f"{name} must be one of {NAMED}, a number, a tensor or a callable; got {substrate!r}"
        )
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        return torch.full_like(inputs, float(substrate))
    if isinstance(substrate, Tensor):
        out = substrate
    elif callable(substrate):
        out = substrate(inputs)
    else:
        raise TypeError(
            f"{name} must be a string, a number, a tensor or a callable, "
            f"got {type(substrate).__name__}"
        )
    try:
        return torch.broadcast_to(out.to(device=inputs.device, dtype=inputs.dtype), inputs.shape)
    except (RuntimeError, AttributeError):
        raise ValueError(
            f"{name} gives shape {tuple(getattr(out, 'shape', ()))}, which does not broadcast to "
            f"the inputs' shape {tuple(inputs.shape)}"
        ) from None
