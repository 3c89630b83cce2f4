"""Argument checks and warnings shared by the attribution methods and the measures."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import captum
import torch
from torch import Tensor

_F = TypeVar("_F", bound=Callable[..., Any])

#: Image batches are ``(N, C, H, W)``, clip batches ``(N, C, T, H, W)``.
SUPPORTED_NDIMS = (4, 5)

#: Frames from files under these paths are skipped when a warning looks for the user's line.
_LIBRARY_PATHS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(captum.__file__)) + os.sep,
    contextlib.__file__,
)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning attributed to the first caller outside this package and Captum,
    so that it names the user's line (and their warning filters see their own module)."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARY_PATHS):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def format_inputs(inputs: Any, name: str = "inputs") -> tuple[Tensor, bool]:
    """The input tensor and whether it came as a 1-tuple (Captum's tuple convention).

    Raises:
        TypeError: not a tensor or a tuple of one tensor.
        ValueError: wrong number of dimensions, not floating point, empty, NaN or Inf.
    """
    is_tuple = isinstance(inputs, tuple)
    if is_tuple:
        if len(inputs) != 1:
            raise ValueError(
                f"{name} must be a tensor or a tuple of one tensor, got a tuple of {len(inputs)}"
            )
        inputs = inputs[0]
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() not in SUPPORTED_NDIMS:
        raise ValueError(
            f"{name} must be a batch of images (N, C, H, W) or clips (N, C, T, H, W), "
            f"got shape {tuple(inputs.shape)}"
        )
    if not inputs.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {inputs.dtype}")
    if inputs.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(inputs.shape)}")
    check_finite(inputs, name)
    return inputs, is_tuple


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise a ValueError naming ``name`` (and, for a batch, its rows) if ``tensor`` holds
    NaN or Inf."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    where = ""
    if tensor.dim() > 1:
        rows = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        where = f" (inputs {short_list(rows)})"
    raise ValueError(f"{name} contains NaN or Inf values{where}")


def short_list(values: list[int], limit: int = 8) -> str:
    """``values`` as a short list, its first ``limit`` and a count of the rest."""
    shown = ", ".join(map(str, values[:limit]))
    more = f", ... {len(values) - limit} more" if len(values) > limit else ""
    return f"[{shown}{more}]"


def layout_hint(inputs: Tensor) -> str:
    """Advice when ``inputs`` look channels-last ``(N, H, W, C)``, else an empty string."""
    if inputs.dim() == 4 and inputs.shape[-1] in (1, 3, 4) and inputs.shape[1] not in (1, 3, 4):
        return (
            f"; the inputs {tuple(inputs.shape)} look channels-last (N, H, W, C): pass "
            "inputs.permute(0, 3, 1, 2) (channels first, as PyTorch models expect)"
        )
    return ""


def format_baselines(baselines: Any, inputs: Tensor, name: str = "baselines") -> Tensor:
    """Baselines broadcast to the shape of ``inputs`` (a number, a tensor or a 1-tuple)."""
    if isinstance(baselines, tuple):
        if len(baselines) != 1:
            raise ValueError(
                f"{name} must be a number, a tensor or a tuple of one, got {len(baselines)}"
            )
        baselines = baselines[0]
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full_like(inputs, check_finite_number(baselines, name))
    if not isinstance(baselines, Tensor):
        raise TypeError(f"{name} must be a number or a tensor, got {type(baselines).__name__}")
    try:
        out = torch.broadcast_to(
            baselines.to(device=inputs.device, dtype=inputs.dtype), inputs.shape
        )
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(baselines.shape)} cannot be broadcast to the inputs' "
            f"shape {tuple(inputs.shape)}"
        ) from None
    check_finite(out, name)
    return out


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= minimum``, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(value: Any, name: str, meaning: str = "") -> bool:
    """``value`` if it is True or False, else a TypeError naming ``name`` (and saying what it
    means, when given) and the value it got."""
    if not isinstance(value, bool):
        said = f" ({meaning})" if meaning else ""
        raise TypeError(f"{name} must be True or False{said}, got {value!r}")
    return value


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a positive finite number, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number ``>= 0``, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_callable(value: Any, name: str) -> None:
    """A TypeError naming ``name`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_finite_number(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def refuse_under_noise_tunnel(option: str) -> Callable[[_F], _F]:
    """Decorate an ``attribute`` method so that Captum's ``NoiseTunnel``, which calls its
    ``__wrapped__``, gets a clear ValueError when ``option=True`` is passed (it can only
    average tensors); direct calls are unchanged."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def under_noise_tunnel(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get(option):
                raise ValueError(
                    f"{option}=True cannot be used under NoiseTunnel, which averages "
                    f"attribution tensors: drop {option}, or call attribute directly"
                )
            return method(*args, **kwargs)

        @functools.wraps(method)
        def direct(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        direct.__wrapped__ = under_noise_tunnel  # type: ignore[attr-defined]
        return direct  # type: ignore[return-value]

    return decorate
