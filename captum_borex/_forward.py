"""Querying a model on many perturbed copies of a batch, Captum style."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex._checks import layout_hint, short_list
from captum_borex._state import modules_of


def rows_of_target(target: TargetType, rows: Tensor) -> TargetType:
    """The target for a batch made of rows ``rows`` of the original batch."""
    if isinstance(target, Tensor) and target.numel() > 1:
        return target.reshape(-1)[rows.to(target.device)]
    if isinstance(target, list):
        return [target[i] for i in rows.tolist()]
    return target


def rows_of_args(args: Any, rows: Tensor, batch_size: int) -> tuple[Any, ...] | None:
    """Additional forward args for rows ``rows``: batch tensors are indexed, others kept."""
    args = _format_additional_forward_args(args)
    if args is None:
        return None
    return tuple(
        a[rows.to(a.device)]
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch_size
        else a
        for a in args
    )


def target_scores(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    rows: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    batch_size: int,
    apply_softmax: bool,
    internal_batch_size: int | None,
) -> Tensor:
    """Score of the target for each perturbed input, in chunks.

    Args:
        forward_func: The model.
        inputs: ``(B, ...)`` perturbed inputs.
        rows: ``(B,)`` the original sample each perturbed input comes from.
        target: Captum target for the original batch.
        additional_forward_args: Extra forward arguments for the original batch.
        batch_size: Size of the original batch (to recognise batch tensors in the args).
        apply_softmax: Score the softmax probability of the target rather than the raw
            output.
        internal_batch_size: Largest batch given to the model at once; None for all.

    Returns:
        ``(B,)`` scores.
    """
    outputs = _chunked_outputs(
        forward_func, inputs, rows, additional_forward_args, batch_size, internal_batch_size
    )
    return torch.cat(
        [
            _scores_of(finite_output(output, part, True), part, target, apply_softmax)
            for part, output in outputs
        ]
    )


def _chunked_outputs(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    rows: Tensor,
    additional_forward_args: Any,
    batch_size: int,
    internal_batch_size: int | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The model's output (without gradients) on each chunk of at most
    ``internal_batch_size`` inputs (None: all), with the chunk's ``rows``."""
    chunk = internal_batch_size or inputs.shape[0]
    for start in range(0, inputs.shape[0], chunk):
        part = rows[start : start + chunk]
        args = rows_of_args(additional_forward_args, part, batch_size)
        try:
            with torch.no_grad():
                output = forward_func(inputs[start : start + chunk], *(args or ()))
        except (RuntimeError, TypeError) as err:
            hint = input_hint(forward_func, inputs)
            if not hint:
                raise
            raise ValueError(f"forward_func failed: {type(err).__name__}: {err}{hint}") from err
        yield part, output


def input_hint(forward_func: Callable[..., Any], inputs: Tensor) -> str:
    """Advice when ``inputs`` do not suit the model: channels-last layout, or a dtype or
    device other than its parameters'; an empty string when nothing looks wrong."""
    hint = layout_hint(inputs)
    for model in modules_of(forward_func):
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != inputs.dtype:
                hint += (
                    f"; the inputs are {inputs.dtype} but the model's parameters are "
                    f"{param.dtype}: pass inputs.to({param.dtype})"
                )
            if param.device != inputs.device:
                hint += (
                    f"; the inputs are on {inputs.device} but the model is on {param.device}: "
                    f"pass inputs.to('{param.device}')"
                )
            return hint
    return hint


def finite_output(output: Any, rows: Tensor, perturbed: bool) -> Any:
    """``output`` after a check that every row is finite (ValueError naming the inputs)."""
    if not isinstance(output, Tensor) or not output.is_floating_point():
        return output
    bad = ~torch.isfinite(output.reshape(output.shape[0], -1)).all(1)
    if bool(bad.any()):
        inputs = sorted(set(rows[bad.to(rows.device)].tolist()))
        what = "perturbed copies of inputs" if perturbed else "inputs"
        raise ValueError(
            f"forward_func returned NaN or Inf for {what} {short_list(inputs)}; a model that "
            "standardises each image ((x - mean) / std) divides by zero on a constant image "
            "such as an all-baseline one: add a small epsilon to the std, or pass other "
            "baselines / substrate"
        )
    return output


def _scores_of(output: Tensor, rows: Tensor, target: TargetType, apply_softmax: bool) -> Tensor:
    """The target's score in each row of a model's ``output`` for rows ``rows``."""
    if apply_softmax:
        output = torch.softmax(output, dim=1)
    return _select_targets(output, rows_of_target(target, rows)).reshape(len(rows))


def format_target_check(
    target: TargetType, row_shape: Sequence[int], batch_size: int, name: str = "target"
) -> None:
    """Raise a ValueError naming ``name`` if an index falls outside the model's output.

    Args:
        target: A Captum target.
        row_shape: Shape of the model's output for one input, e.g. ``(K,)``.
        batch_size: Number of inputs.
        name: Argument name for error messages.
    """
    if target is None or not row_shape:
        return
    if isinstance(target, tuple):
        _check_index_tuple(target, row_shape, name)
        return
    if isinstance(target, Tensor):
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got dtype {target.dtype}")
        if target.numel() not in (1, batch_size):
            raise ValueError(
                f"{name} must be a scalar or hold one class per input ({batch_size}), "
                f"got {target.numel()} values"
            )
        values: Sequence[int] = target.reshape(-1).tolist()
    elif isinstance(target, list):
        if len(target) != batch_size:
            raise ValueError(
                f"{name} list must hold one class per input ({batch_size}), got {len(target)}"
            )
        if target and isinstance(target[0], tuple):
            for item in target:
                _check_index_tuple(item, row_shape, name)
            return
        values = target
    elif isinstance(target, int) and not isinstance(target, bool):
        values = [target]
    else:
        raise TypeError(
            f"{name} must be an int, a tuple, a tensor or a list, got {type(target).__name__}"
        )
    n_outputs = row_shape[0]
    bad = [v for v in values if not 0 <= int(v) < n_outputs]
    if bad:
        raise ValueError(
            f"{name} {bad[0]} is out of range for a model with {n_outputs} outputs "
            f"(valid: 0..{n_outputs - 1})"
        )


def _check_index_tuple(index: Any, row_shape: Sequence[int], name: str) -> None:
    """A tuple target: one int per output dimension, each in range."""
    if not isinstance(index, tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in index
    ):
        raise TypeError(f"{name} tuples must hold ints, got {index!r}")
    if len(index) != len(row_shape):
        raise ValueError(
            f"{name} {index} has {len(index)} indices but the model's output has "
            f"{len(row_shape)} dimension(s) per input {tuple(row_shape)}; pass one index per "
            "dimension"
        )
    for i, size in zip(index, row_shape):
        if not 0 <= i < size:
            raise ValueError(
                f"{name} {index} is out of range for an output of shape {tuple(row_shape)} "
                "per input (indices must be >= 0 and below each size)"
            )


def check_target(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    apply_softmax: bool,
    internal_batch_size: int | None = None,
) -> None:
    """Run the model once, at most ``internal_batch_size`` inputs at a time (None: all),
    and check that ``target`` fits its output.

    Raises:
        ValueError: the model does not return one row per input, a class index is out of
            range, or ``target`` is None where the output needs one.
    """
    for _ in _checked_outputs(
        forward_func, inputs, target, additional_forward_args, apply_softmax, internal_batch_size
    ):
        pass


def checked_target_scores(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    apply_softmax: bool,
    internal_batch_size: int | None,
) -> Tensor:
    """:func:`check_target` and the target's score of every input, in the same pass.

    Returns:
        ``(N,)`` the target's score (its softmax probability with ``apply_softmax``) for each
        input.

    Raises:
        ValueError: as :func:`check_target`.
    """
    outputs = _checked_outputs(
        forward_func, inputs, target, additional_forward_args, apply_softmax, internal_batch_size
    )
    return torch.cat([_scores_of(output, rows, target, apply_softmax) for rows, output in outputs])


def _checked_outputs(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    apply_softmax: bool,
    internal_batch_size: int | None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The model's output on each chunk of the inputs, with the chunk's rows, each checked
    against ``target`` before it is given out."""
    batch = inputs.shape[0]
    rows = torch.arange(batch, device=inputs.device)
    for part, output in _chunked_outputs(
        forward_func, inputs, rows, additional_forward_args, batch, internal_batch_size
    ):
        _check_output(output, len(part), target, batch, apply_softmax)
        yield part, finite_output(output, part, False)


def _check_output(
    output: Any, n_rows: int, target: TargetType, batch_size: int, apply_softmax: bool
) -> None:
    """Check a model's output for ``n_rows`` inputs of a batch of ``batch_size`` against
    ``target`` (see :func:`check_target`)."""
    if isinstance(output, (tuple, list, Mapping)) or hasattr(output, "logits"):
        raise ValueError(
            f"forward_func returned a {type(output).__name__}, not a tensor: wrap the model so "
            "it returns the logits tensor, e.g. forward_func=lambda x: model(x).logits "
            "(Hugging Face outputs) or lambda x: model(x)[0] (a tuple)"
        )
    if not isinstance(output, Tensor) or output.shape[:1] != (n_rows,):
        raise ValueError(
            "forward_func must return a tensor with one row per input, got "
            f"{getattr(output, 'shape', type(output).__name__)}"
        )
    if target is None:
        if output.dim() > 1 and output[0].numel() > 1:
            raise ValueError(
                f"target is required: the model returns {tuple(output.shape[1:])} outputs per input"
            )
        if apply_softmax:
            raise ValueError(
                "target is required with apply_softmax=True (the softmax of a single output "
                "is constant); pass a target or apply_softmax=False"
            )
        return
    format_target_check(target, tuple(output.shape[1:]), batch_size)
