"""From BOREx's window arguments to a :class:`WindowSpace` and an acquisition lattice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from captum_borex._checks import check_int
from captum_borex.bo.windows import WindowSpace

#: Published window half-sizes for 224-pixel images.
PUBLISHED_HALF_SIZES = (30, 45, 60, 75)
#: GP units are pixels of a 224-pixel image (the published length scales' unit).
REFERENCE_SIZE = 224
#: Default temporal half-lengths, as fractions of the clip's length.
TEMPORAL_FRACTIONS = (0.125, 0.25)
#: Centres per spatial axis of the default acquisition lattice (56: stride 4 at 224 pixels).
CENTRES_PER_AXIS = 56
#: Centres along time of the default lattice (every frame of clips up to 16 frames).
CENTRES_IN_TIME = 16
#: Largest default lattice, in windows (sizes x centres); clips coarsen space to fit it.
LATTICE_BUDGET = 25_000


def half_sizes(
    values: Any, name: str, defaults: Sequence[float], length: int, what: str
) -> tuple[int, ...]:
    """Sorted distinct half-lengths from an argument, or scaled defaults when it is None.

    Raises:
        TypeError: not a sequence of ints.
        ValueError: a half-length below 1 or a window longer than ``length``.
    """
    if values is None:
        return tuple(sorted({max(1, round(v)) for v in defaults}))
    if (
        isinstance(values, int)
        or not isinstance(values, Sequence)
        or len(values) == 0
        or not all(isinstance(h, int) and not isinstance(h, bool) for h in values)
    ):
        raise TypeError(f"{name} must be a non-empty sequence of ints, got {values!r}")
    out = tuple(sorted(set(values)))
    if out[0] < 1:
        raise ValueError(f"{name} must be >= 1, got {out[0]}")
    if 2 * out[-1] > length:
        raise ValueError(
            f"{name}: half-size {out[-1]} gives windows of {2 * out[-1]} {what}, longer than the "
            f"input ({length} {what})"
        )
    return out


def window_space(
    shape: Sequence[int], window_sizes: Any, temporal_window_sizes: Any
) -> WindowSpace:
    """The window space of an image ``(H, W)`` or clip ``(T, H, W)`` from BOREx's arguments."""
    spatial = tuple(shape[-2:])
    side = min(spatial)
    unit = side / REFERENCE_SIZE
    sizes = half_sizes(
        window_sizes, "window_sizes", [h * unit for h in PUBLISHED_HALF_SIZES], side, "pixels"
    )
    if len(shape) == 2:
        if temporal_window_sizes is not None:
            raise ValueError("temporal_window_sizes applies to clips (N, C, T, H, W) only")
        return WindowSpace(spatial, [sizes], (0, 0), (unit, unit))
    frames = shape[0]
    durations = half_sizes(
        temporal_window_sizes,
        "temporal_window_sizes",
        [f * frames for f in TEMPORAL_FRACTIONS],
        frames,
        "frames",
    )
    return WindowSpace(
        tuple(shape), [durations, sizes], (0, 1, 1), (frames / REFERENCE_SIZE, unit, unit)
    )


def acquisition_stride(space: WindowSpace, stride: Any) -> tuple[int, ...]:
    """Stride per axis of the acquisition lattice: the argument, or the default rule.

    The default puts about :data:`CENTRES_PER_AXIS` centres on each spatial axis and
    :data:`CENTRES_IN_TIME` on time, then coarsens the spatial axes until the lattice holds at
    most :data:`LATTICE_BUDGET` windows.
    """
    if stride is not None:
        values = (stride,) * space.n_axes if isinstance(stride, int) else tuple(stride)
        if len(values) != space.n_axes:
            raise ValueError(
                f"acquisition_stride needs one value or one per axis ({space.n_axes}), "
                f"got {len(values)}"
            )
        return tuple(check_int(v, "acquisition_stride") for v in values)
    spatial = space.shape[-2:]
    step = max(1, round(min(spatial) / CENTRES_PER_AXIS))
    time = (max(1, round(space.shape[0] / CENTRES_IN_TIME)),) if space.n_axes == 3 else ()

    def size(s: int) -> int:
        counts = [math.ceil(n / t) for n, t in zip(space.shape, (*time, s, s))]
        return math.prod(counts) * space.n_combos

    while size(step) > LATTICE_BUDGET and step < min(spatial):
        step += 1
    return (*time, step, step)


#: A clip's cells along time, at most.
CELLS_IN_TIME = 4


def field_cells(space: WindowSpace, cells: int) -> tuple[int, ...]:
    """Cells per axis of the field model: ``cells`` along each spatial axis of an image;
    a clip gets half as many and :data:`CELLS_IN_TIME` along time
    (:class:`~captum_borex.bo.field.CellGrid` caps each at the axis's length)."""
    if space.n_axes == 2:
        return (cells, cells)
    spatial = max(1, cells // 2)
    return (CELLS_IN_TIME, spatial, spatial)


def feature_names(space: WindowSpace) -> str:
    """The GP features in order, for messages: (rows, columns, size) or the clip's five."""
    if space.n_axes == 2:
        return "(rows, columns, size)"
    return "(frames, rows, columns, duration, size)"
