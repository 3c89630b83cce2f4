"""Turning values over windows into maps over pixels (or voxels)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_borex.bo.windows import WindowSpace


def box_mean(values: Tensor, half_widths: Sequence[int], axes: Sequence[int]) -> Tensor:
    """Border-aware mean over a ``(2l + 1)``-wide box along each of the given axes.

    Each output element is the mean of the input elements within ``l`` positions of it
    along every listed axis, counting only positions inside the tensor. Computed with
    running sums, so the cost does not grow with the box width.

    Args:
        values: Any floating tensor.
        half_widths: Half-width ``l`` per axis in ``axes``.
        axes: The axes to filter along.

    Returns:
        A tensor shaped like ``values``.
    """
    out = values
    for half, axis in zip(half_widths, axes):
        length = out.shape[axis]
        moved = out.movedim(axis, -1)
        # Running sums padded so that every window's ends are plain slices: zeros before
        # the start, the total after the end.
        sums = moved.cumsum(-1)
        before = sums.new_zeros(*sums.shape[:-1], half + 1)
        after = sums[..., -1:].expand(*sums.shape[:-1], half)
        padded = torch.cat([before, sums, after], -1)
        window_sums = padded[..., 2 * half + 1 :] - padded[..., :length]
        position = torch.arange(length, device=values.device)
        counts = (position + half + 1).clamp(max=length) - (position - half).clamp(min=0)
        out = (window_sums / counts.to(values.dtype)).movedim(-1, axis)
    return out


def lattice_to_full(
    values: Tensor, positions: Sequence[Tensor], lengths: Sequence[int], axes: Sequence[int]
) -> Tensor:
    """Linear interpolation from lattice positions to every position along some axes.

    Args:
        values: Tensor whose axis ``axes[i]`` holds values at ``positions[i]``.
        positions: For each axis, the increasing, evenly spaced integer positions of the
            values along it.
        lengths: For each axis, the full length to interpolate to.
        axes: The axes to expand.

    Returns:
        The interpolated tensor; positions beyond the lattice's ends take the end value.
    """
    out = values
    for pos, length, axis in zip(positions, lengths, axes):
        if pos.numel() == length:
            continue
        step = float(pos[1] - pos[0]) if pos.numel() > 1 else 1.0
        target = torch.arange(length, device=values.device, dtype=values.dtype)
        u = ((target - float(pos[0])) / step).clamp(0, pos.numel() - 1)
        lo = u.floor().long()
        hi = (lo + 1).clamp(max=pos.numel() - 1)
        weight = u - lo.to(values.dtype)
        moved = out.movedim(axis, -1)
        low, high = moved.index_select(-1, lo), moved.index_select(-1, hi)
        out = torch.lerp(low, high, weight).movedim(-1, axis)
    return out


def windows_to_size_maps(values: Tensor, space: WindowSpace) -> Tensor:
    """Box-average window values, one map per window size.

    For each window size, a pixel receives the mean value of all windows of that size whose
    centre lies within the window's half-length of it.

    Args:
        values: ``(N, S, *space.shape)`` a value for every window of ``space``.
        space: The window space ``values`` is laid out on.

    Returns:
        ``(N, S, *space.shape)`` a map per window size.
    """
    axes = list(range(1, space.n_axes + 1))
    maps = [box_mean(values[:, s], space.combos[s].tolist(), axes) for s in range(space.n_combos)]
    return torch.stack(maps, 1)


def windows_to_map(values: Tensor, space: WindowSpace) -> Tensor:
    """The published map rebuild: :func:`windows_to_size_maps`, then the mean over sizes.

    Args:
        values: ``(N, S, *space.shape)`` a value for every window of ``space``.
        space: The window space ``values`` is laid out on.

    Returns:
        ``(N, *space.shape)`` map.
    """
    return windows_to_size_maps(values, space).mean(1)
