"""The search space of BOREx: axis-aligned occlusion windows over any number of axes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Lattice:
    """GP features of a product grid: every size at every combination of axis positions.

    Attributes:
        axis_features: For each axis, ``(L_i,)`` float64 centre features of its positions.
        size_features: ``(S, G)`` float64 half-size features of each window size.
    """

    axis_features: list[Tensor]
    size_features: Tensor


@dataclass(frozen=True)
class WindowGrid:
    """A set of windows of one :class:`WindowSpace`, as indices and GP features.

    Attributes:
        combos: ``(m,)`` index into :attr:`WindowSpace.combos` (the window's size).
        centres: ``(m, D)`` integer centre of each window, one column per axis.
        features: ``(m, D + G)`` float64 GP features (centres, then half-sizes per
            size group, in GP units).
        lattice: The same features in product form, when the grid is a full lattice
            (size-major, then centres in row-major order); lets covariances be computed
            axis by axis.
    """

    combos: Tensor
    centres: Tensor
    features: Tensor
    lattice: Lattice | None = None

    def __len__(self) -> int:
        return self.combos.shape[0]


class WindowSpace:
    r"""Occlusion windows over the spatial (and temporal) axes of an input.

    A window is a centre per axis plus a half-length per axis. Axes share a half-length
    through *size groups*: an image has one group for rows and columns (square windows),
    a clip has a temporal group and a spatial group. Along an axis of length ``L`` a window
    with centre ``c`` and half-length ``l`` covers ``[max(c - l, 0), min(c + l, L))``.

    The GP sees each window as ``D + G`` features: its centres, then its half-length per
    group, all divided by ``pixels_per_unit`` so that the published length scales (given
    for 224-pixel images) keep their meaning at any resolution.

    Args:
        shape: Length of each axis, e.g. ``(H, W)`` or ``(T, H, W)``.
        half_sizes: For each size group, the half-lengths it may take (in pixels).
        axis_groups: For each axis, the index of its size group.
        pixels_per_unit: For each axis, how many pixels make one GP unit.
    """

    def __init__(
        self,
        shape: Sequence[int],
        half_sizes: Sequence[Sequence[int]],
        axis_groups: Sequence[int],
        pixels_per_unit: Sequence[float],
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.half_sizes = tuple(tuple(int(v) for v in group) for group in half_sizes)
        self.axis_groups = tuple(int(g) for g in axis_groups)
        self.pixels_per_unit = tuple(float(p) for p in pixels_per_unit)
        if not (len(self.shape) == len(self.axis_groups) == len(self.pixels_per_unit)):
            raise ValueError("shape, axis_groups and pixels_per_unit need one entry per axis")
        if sorted(set(self.axis_groups)) != list(range(len(self.half_sizes))):
            raise ValueError("axis_groups must use every size group 0..G-1")
        # One unit per group: the unit of the group's first axis.
        self.group_units = tuple(
            self.pixels_per_unit[self.axis_groups.index(g)] for g in range(self.n_groups)
        )
        group_combos = list(itertools.product(*self.half_sizes))
        #: ``(S, G)`` half-length of each size group, for each window size.
        self.group_half_sizes = torch.tensor(group_combos, dtype=torch.long)
        #: ``(S, D)`` half-length along each axis, for each window size.
        self.combos = self.group_half_sizes[:, list(self.axis_groups)]

    @property
    def n_axes(self) -> int:
        return len(self.shape)

    @property
    def n_groups(self) -> int:
        return len(self.half_sizes)

    @property
    def n_combos(self) -> int:
        return self.combos.shape[0]

    @property
    def n_features(self) -> int:
        return self.n_axes + self.n_groups

    def features(self, combos: Tensor, centres: Tensor) -> Tensor:
        """GP features (float64) of windows given by size index and centres."""
        units = torch.tensor(self.pixels_per_unit, dtype=torch.float64, device=centres.device)
        group_units = torch.tensor(self.group_units, dtype=torch.float64, device=centres.device)
        sizes = self.group_half_sizes.to(centres.device)[combos].to(torch.float64)
        return torch.cat([centres.to(torch.float64) / units, sizes / group_units], dim=-1)

    def axis_centres(self, stride: Sequence[int]) -> list[Tensor]:
        """Centres along each axis at the given stride, the lattice centred on the axis."""
        out = []
        for length, step in zip(self.shape, stride):
            offset = ((length - 1) % step) // 2
            out.append(torch.arange(offset, length, step))
        return out

    def grid(self, stride: Sequence[int], device: torch.device | str = "cpu") -> WindowGrid:
        """Every window size at every centre of a lattice with the given stride per axis.

        The order is size-major, then centres in row-major order, so a grid with stride 1
        reshapes to ``(S, *shape)``.
        """
        axes = [c.to(device) for c in self.axis_centres(stride)]
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.n_axes)
        n_centres = mesh.shape[0]
        combos = torch.arange(self.n_combos, device=device).repeat_interleave(n_centres)
        centres = mesh.repeat(self.n_combos, 1)
        lattice = Lattice(
            axis_features=[a.to(torch.float64) / u for a, u in zip(axes, self.pixels_per_unit)],
            size_features=self.features(
                torch.arange(self.n_combos, device=device),
                torch.zeros(self.n_combos, self.n_axes, dtype=torch.long, device=device),
            )[:, self.n_axes :],
        )
        return WindowGrid(combos, centres, self.features(combos, centres), lattice)

    def neighbourhood(self, combos: Tensor, centres: Tensor, radius: Sequence[int]) -> WindowGrid:
        """Windows of the same size whose centres lie within ``radius`` of the given ones.

        Args:
            combos: ``(B,)`` window size indices.
            centres: ``(B, D)`` centres.
            radius: Per axis, how far to look either side.

        Returns:
            A grid whose tensors carry a leading batch axis: ``combos (B, k)``,
            ``centres (B, k, D)``, ``features (B, k, D + G)``; centres are clipped to the
            axes, so some windows may repeat.
        """
        device = centres.device
        offsets = [torch.arange(-r, r + 1, device=device) for r in radius]
        delta = torch.stack(torch.meshgrid(*offsets, indexing="ij"), dim=-1).reshape(
            -1, self.n_axes
        )
        upper = torch.tensor(self.shape, device=device) - 1
        near = (centres[:, None, :] + delta[None]).clamp(min=torch.zeros_like(upper), max=upper)
        near_combos = combos[:, None].expand(-1, delta.shape[0])
        return WindowGrid(near_combos, near, self.features(near_combos, near))

    def axis_masks(self, combos: Tensor, centres: Tensor) -> list[Tensor]:
        """Per axis, ``(B, L)`` booleans: True along the axis inside each window.

        Args:
            combos: ``(B,)`` window size indices.
            centres: ``(B, D)`` centres.
        """
        half = self.combos.to(centres.device)[combos]
        out = []
        for axis, length in enumerate(self.shape):
            position = torch.arange(length, device=centres.device)
            lo = (centres[:, axis] - half[:, axis])[:, None]
            hi = (centres[:, axis] + half[:, axis])[:, None]
            out.append((position[None] >= lo) & (position[None] < hi))
        return out

    def masks(self, combos: Tensor, centres: Tensor) -> Tensor:
        """Boolean masks ``(B, *shape)`` that are True inside each window.

        Args:
            combos: ``(B,)`` window size indices.
            centres: ``(B, D)`` centres.
        """
        mask = None
        for axis, inside in enumerate(self.axis_masks(combos, centres)):
            view = [inside.shape[0]] + [1] * self.n_axes
            view[axis + 1] = inside.shape[1]
            inside = inside.view(view)
            mask = inside if mask is None else mask & inside
        return mask


def box_smooth(maps: Tensor, half: Sequence[int]) -> Tensor:
    """``(N, *shape)`` maps box-averaged over ``2 * half + 1`` pixels per axis (at a border,
    over the pixels inside)."""
    kernel = tuple(2 * h + 1 for h in half)
    pool = F.avg_pool2d if maps.dim() == 3 else F.avg_pool3d
    return pool(maps.unsqueeze(1), kernel, 1, tuple(half), count_include_pad=False)[:, 0]


def smoothed_over_windows(maps: Tensor, space: WindowSpace, share: float) -> Tensor:
    """``(N, *space.shape)`` maps box-averaged over ``share`` times the smallest window's
    half-length along each axis (unchanged where that rounds to 0)."""
    half = [round(share * h) for h in space.combos[0].tolist()]
    return box_smooth(maps, half) if any(half) else maps
