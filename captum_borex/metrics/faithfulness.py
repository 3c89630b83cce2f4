"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018): do the top pixels matter?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex._checks import check_int, format_inputs
from captum_borex._forward import check_target, target_scores
from captum_borex._ranks import descending_ranks
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved
from captum_borex._substrates import Substrate, make_substrate
from captum_borex.attr._priors import to_pixel_maps


@dataclass
class CausalCurves:
    """Deletion or insertion curves and their areas.

    Attributes:
        auc: ``(N,)`` trapezoid area under each curve on [0, 1].
        fractions: ``(n_steps + 1,)`` fraction of pixels removed (or restored) at each point.
        scores: ``(N, n_steps + 1)`` the target's score at each point.
    """

    auc: Tensor
    fractions: Tensor
    scores: Tensor


def causal_curves(
    mode: Literal["deletion", "insertion"],
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    n_steps: int = 100,
    substrate: Substrate | None = None,
    apply_softmax: bool = True,
    internal_batch_size: int = 256,
) -> CausalCurves:
    """Deletion or insertion curves of every input; see :func:`deletion_auc`.

    ``substrate=None`` means "zeros" for deletion and "blur" for insertion (as in RISE).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    x, _ = format_inputs(inputs)
    check_int(n_steps, "n_steps")
    check_int(internal_batch_size, "internal_batch_size")
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if not isinstance(attributions, Tensor):
        raise TypeError(f"attributions must be a tensor, got {type(attributions).__name__}")
    saliency = to_pixel_maps(attributions, x, "sum", "attributions").flatten(1)
    if substrate is None:
        substrate = "zeros" if mode == "deletion" else "blur"
    removed = make_substrate(substrate, x)
    start, end = (x, removed) if mode == "deletion" else (removed, x)

    batch, n_pixels = saliency.shape
    rank = descending_ranks(saliency)
    counts = torch.round(torch.linspace(0, n_pixels, n_steps + 1, device=x.device)).long()
    steps_per_call = max(1, internal_batch_size // batch)
    spatial = x.shape[2:]
    scores = []
    with preserved(modules_of(forward_func), [x]), forked_rng(cuda_devices(x)):
        check_target(forward_func, x, target, additional_forward_args, apply_softmax)
        for first in range(0, n_steps + 1, steps_per_call):
            k = counts[first : first + steps_per_call]
            changed = (rank[None] < k[:, None, None]).view(len(k), batch, 1, *spatial)
            shown = torch.where(changed, end[None], start[None]).flatten(0, 1)
            rows = torch.arange(batch, device=x.device).repeat(len(k))
            s = target_scores(
                forward_func,
                shown,
                rows,
                target,
                additional_forward_args,
                batch,
                apply_softmax,
                None,
            )
            scores.append(s.view(len(k), batch).T)
    curve = torch.cat(scores, 1).to(torch.float64)
    fractions = counts.to(torch.float64) / n_pixels
    auc = torch.trapezoid(curve, fractions, dim=1)
    return CausalCurves(auc=auc.to(x.dtype), fractions=fractions, scores=curve.to(x.dtype))


def deletion_auc(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    n_steps: int = 100,
    substrate: Substrate = "zeros",
    apply_softmax: bool = True,
    internal_batch_size: int = 256,
) -> Tensor:
    r"""Deletion AUC: remove pixels from most to least salient; lower is better.

    Pixels are ranked by saliency (channels summed) and replaced by the substrate in
    ``n_steps`` equal steps; the target's score is recorded at each of the
    ``n_steps + 1`` points and the area under that curve over [0, 1] is returned. A
    faithful map makes the score fall fast.

    Args:
        forward_func: The model.
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
        attributions: Maps shaped like the inputs, ``(N, *spatial)`` or ``(N, 1, *spatial)``.
        target: Output index to score, as in Captum. Default: None
        additional_forward_args: Extra arguments for ``forward_func``. Default: None
        n_steps: Number of removal steps. Default: 100
        substrate: What removed pixels become: "zeros", "blur", "mean", a number, a
            tensor or a callable ``inputs -> tensor``, in the model's input space (for
            inputs normalised with a mean and std, "zeros" is the mean colour, not black).
            Default: "zeros"
        apply_softmax: Score by the target's softmax probability; False uses the raw
            output. Default: True
        internal_batch_size: Largest batch passed to the model at once. Default: 256

    Returns:
        ``(N,)`` AUC per input, in [0, 1] for probabilities.

    Examples::

        >>> attributions = BOREx(model).attribute(images, target=labels)
        >>> deletion_auc(model, images, attributions, target=labels).mean()
    """
    return causal_curves(
        "deletion",
        forward_func,
        inputs,
        attributions,
        target,
        additional_forward_args,
        n_steps,
        substrate,
        apply_softmax,
        internal_batch_size,
    ).auc


def insertion_auc(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    attributions: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    n_steps: int = 100,
    substrate: Substrate = "blur",
    apply_softmax: bool = True,
    internal_batch_size: int = 256,
) -> Tensor:
    r"""Insertion AUC: restore pixels from most to least salient; higher is better.

    Starts from the substrate (by default a blurred copy, as in RISE) and restores the
    original pixels in order of saliency in ``n_steps`` equal steps; returns the area under
    the target's score curve over [0, 1]. Arguments as in :func:`deletion_auc`, except
    ``substrate`` defaults to "blur".

    Returns:
        ``(N,)`` AUC per input, in [0, 1] for probabilities.

    Examples::

        >>> insertion_auc(model, images, attributions, target=labels).mean()
    """
    return causal_curves(
        "insertion",
        forward_func,
        inputs,
        attributions,
        target,
        additional_forward_args,
        n_steps,
        substrate,
        apply_softmax,
        internal_batch_size,
    ).auc
