"""RISE: randomized input sampling for explanation (Petsiuk et al., BMVC 2018)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from captum._utils.typing import TargetType
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_borex._checks import (
    check_callable,
    check_int,
    check_positive,
    format_baselines,
    format_inputs,
)
from captum_borex._forward import check_target, target_scores
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved


class RISE(PerturbationAttribution):
    r"""RISE saliency: the model's score averaged over random masks, weighted by each mask.

    Each mask is a random ``cells x cells`` binary grid (each cell kept with probability
    ``keep_prob``), upsampled bilinearly to ``(cells + 1)`` cell sizes and cropped at a
    random shift, so masks are smooth and not aligned to a fixed grid. The input is shown
    as ``x * M + baseline * (1 - M)``, and the saliency of a pixel is
    ``sum_i s_i M_i / (n_masks * keep_prob)`` with ``s_i`` the target's score. The same
    masks serve every image of the batch, so an image's map does not depend on its
    neighbours. Spatio-temporal inputs ``(N, C, T, H, W)`` get spatio-temporal masks.

    Args:
        forward_func: The model, returning logits ``(N, K)`` (or probabilities with
            ``apply_softmax=False``).

    Examples::

        >>> rise = RISE(model)
        >>> saliency = rise.attribute(images, target=labels, n_masks=2000, seed=0)
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        check_callable(forward_func, "forward_func")
        super().__init__(forward_func)

    @classmethod
    def get_name(cls) -> str:
        return "RISE"

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: float | Tensor | tuple[Tensor, ...] = 0.0,
        n_masks: int = 2000,
        cells: int | Sequence[int] = 7,
        keep_prob: float = 0.5,
        perturbations_per_eval: int = 32,
        internal_batch_size: int | None = None,
        seed: int | None = None,
        apply_softmax: bool = True,
        show_progress: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Saliency of every input from ``n_masks`` random masks.

        Args:
            inputs: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` clips, or a tuple of one
                such tensor (the output is then a tuple too).
            target: Output index to explain, as in Captum (int, tensor, list).
                Default: None
            additional_forward_args: Extra arguments for ``forward_func``; tensors whose
                first dimension is N follow their input. Default: None
            baselines: What masked-out pixels become: a number or a tensor broadcastable
                to the inputs, in the model's input space (for normalised inputs, 0 is the
                mean colour, not black). Default: 0.0
            n_masks: Number of random masks. Default: 2000
            cells: Cells of the low-resolution grid per spatial axis (an int for all
                axes, or one per axis). Default: 7
            keep_prob: Probability that a cell is kept. Default: 0.5
            perturbations_per_eval: Masks evaluated per step: each step masks every
                input with this many masks, so the model sees ``N * perturbations_per_eval``
                inputs at once unless ``internal_batch_size`` splits them. Default: 32
            internal_batch_size: Largest batch passed to the model at once; a step's
                ``N * perturbations_per_eval`` masked inputs are split into chunks of at
                most this size. Bounds the memory a big batch or model needs without
                changing the map (for example, 72 images with EfficientNet-Lite2 at 160 px
                and the default 32 masks a step made one batch of 2304 images that needed
                about 21 GB). None passes a step's inputs at once. Default: None
            seed: Seed of the masks and of any randomness in the model (e.g. Dropout
                in training mode), for reproducible maps; the whole call then runs under a
                forked RNG, so the global RNG is not touched. None uses the global RNG.
                Default: None
            apply_softmax: Score by the target's softmax probability (as in the paper);
                False uses the raw output. Default: True
            show_progress: Show a progress bar over mask batches. Default: False

        Returns:
            Tensor (or tuple of one) shaped like the inputs: the map repeated over
            channels.

        Raises:
            ValueError: bad inputs or baselines (NaN/Inf), NaN/Inf model outputs (the
                inputs concerned named), target out of range, invalid mask parameters.
        """
        x, is_tuple = format_inputs(inputs)
        spatial = tuple(x.shape[2:])
        check_int(n_masks, "n_masks")
        check_int(perturbations_per_eval, "perturbations_per_eval")
        if internal_batch_size is not None:
            check_int(internal_batch_size, "internal_batch_size")
        keep_prob = check_positive(keep_prob, "keep_prob")
        if keep_prob > 1:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
        grid = _cells_per_axis(cells, len(spatial))
        if any(c > s for c, s in zip(grid, spatial)):
            raise ValueError(f"cells {grid} must not exceed the input's size {spatial}")
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        base = format_baselines(baselines, x)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        batch = x.shape[0]

        grids, shifts = draw_masks(n_masks, spatial, grid, keep_prob, generator)
        saliency = torch.zeros(batch, math.prod(spatial), dtype=torch.float64, device=x.device)
        chunks = range(0, n_masks, perturbations_per_eval)
        with (
            preserved(modules_of(self.forward_func), [x]),
            forked_rng(cuda_devices(x), seed, enabled=seed is not None),
        ):
            check_target(self.forward_func, x, target, additional_forward_args, apply_softmax)
            for start in progress(chunks, desc="RISE attribution") if show_progress else chunks:
                k = min(perturbations_per_eval, n_masks - start)
                chunk = slice(start, start + k)
                masks = render_masks(grids[chunk], shifts[chunk], spatial).to(x.device, x.dtype)
                shown = x[:, None] * masks[None, :, None] + base[:, None] * (
                    1 - masks[None, :, None]
                )
                rows = torch.arange(batch, device=x.device).repeat_interleave(k)
                scores = target_scores(
                    self.forward_func,
                    shown.flatten(0, 1),
                    rows,
                    target,
                    additional_forward_args,
                    batch,
                    apply_softmax,
                    internal_batch_size,
                ).view(batch, k)
                saliency += scores.to(torch.float64) @ masks.flatten(1).to(torch.float64)
        saliency = (saliency / (n_masks * keep_prob)).view(batch, 1, *spatial)
        maps = saliency.to(x.dtype).expand_as(x).contiguous()
        return (maps,) if is_tuple else maps


def random_masks(
    n: int,
    shape: Sequence[int],
    cells: Sequence[int],
    keep_prob: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """RISE masks ``(n, *shape)`` in [0, 1] (on the CPU).

    Args:
        n: Number of masks.
        shape: Size of each spatial axis.
        cells: Grid cells per axis.
        keep_prob: Probability that a cell is 1.
        generator: Source of randomness; None for the global RNG.
    """
    grids, shifts = draw_masks(n, shape, cells, keep_prob, generator)
    return render_masks(grids, shifts, shape)


def draw_masks(
    n: int,
    shape: Sequence[int],
    cells: Sequence[int],
    keep_prob: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The random part of ``n`` RISE masks: binary grids ``(n, *cells)``, shifts ``(n, D)``.

    Drawn all at once so the masks do not depend on how they are later rendered in chunks.
    """
    cell_size = [math.ceil(s / c) for s, c in zip(shape, cells)]
    grids = (torch.rand(n, *cells, generator=generator) < keep_prob).float()
    shifts = torch.stack([torch.randint(0, cs, (n,), generator=generator) for cs in cell_size], 1)
    return grids, shifts


def render_masks(grids: Tensor, shifts: Tensor, shape: Sequence[int]) -> Tensor:
    """Upsample grids from :func:`draw_masks` to ``(cells + 1)`` cells and crop at the shifts."""
    cells = grids.shape[1:]
    cell_size = [math.ceil(s / c) for s, c in zip(shape, cells)]
    up_size = [(c + 1) * cs for c, cs in zip(cells, cell_size)]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    up = F.interpolate(grids[:, None], size=up_size, mode=mode, align_corners=False)[:, 0]
    out = torch.empty(grids.shape[0], *shape, dtype=up.dtype)
    for i, shift in enumerate(shifts.tolist()):
        out[i] = up[(i, *(slice(s, s + length) for s, length in zip(shift, shape)))]
    return out


def _cells_per_axis(cells: int | Sequence[int], n_axes: int) -> tuple[int, ...]:
    if isinstance(cells, int) and not isinstance(cells, bool):
        values = (cells,) * n_axes
    else:
        values = tuple(cells)
        if len(values) != n_axes:
            raise ValueError(
                f"cells needs one value per spatial axis ({n_axes}), got {len(values)}"
            )
    for value in values:
        check_int(value, "cells")
    return values
