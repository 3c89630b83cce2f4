"""The BOREx loop: Bayesian optimisation over occlusion windows with a prior mean.

Free of Captum: it knows windows, a prior map and an objective that scores windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from captum_borex.bo.acquisition import best_index, centrality_penalty, upper_confidence_bound
from captum_borex.bo.reconstruction import (
    average_over_sizes,
    box_mean,
    lattice_to_full,
    windows_to_map,
)
from captum_borex.bo.surrogate import GridPosterior, as_lengthscale, fit_lengthscales, make_kernel
from captum_borex.bo.windows import WindowGrid, WindowSpace

#: Scores windows: ``objective(combos (N, q), centres (N, q, D)) -> y (N, q)``, or
#: ``(y, extra)`` with ``extra (N, q, K)``: K more quantities observed at the same windows,
#: each rebuilt as a map at the end (see :attr:`BOResult.extra_maps`) without steering the search.
Objective = Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class BOSettings:
    """Hyperparameters of the BOREx optimiser; defaults follow the published method except
    for ``prior_fit`` and ``map_prior`` (published: ``"fixed"`` and ``"smoothed"``).

    Length scales, their bounds and the jitter are in GP units (see :class:`WindowSpace`);
    ``None`` means the published values: 12 for every centre feature, 10 for every size
    feature, jitter 1 for centres and 0.5 for sizes. The map is rebuilt from the posterior
    on the acquisition lattice, interpolated linearly; ``exact_map`` evaluates it on every
    window instead (the published reconstruction; slower for large inputs).

    ``prior_fit="affine"`` makes the GP's prior mean ``a[size] + b * prior``, an offset per
    window size and a slope fitted to each image's observations by ridge regression towards
    the published offsets 0 and slope 1 (see :func:`fit_prior_coefficients`);
    ``map_prior="sharp"`` rebuilds the map as the (fitted) prior itself plus the rebuilt
    correction, where the published map box-averages the prior as well.
    """

    n_iter: int = 50
    kappa: float = 10.0
    lengthscale: Sequence[float] | None = None
    lengthscale_bounds: tuple[float, float] = (1.0, 20.0)
    noise: float = 0.01
    jitter: Sequence[float] | None = None
    acquisition_stride: Sequence[int] | None = None
    refit_every: int = 1
    warm_start: bool = False
    windows_per_step: int = 1
    prior_mean: Literal["center", "window"] = "center"
    exact_map: bool = False
    prior_fit: Literal["fixed", "affine"] = "affine"
    prior_fit_strength: float = 1.0
    map_prior: Literal["smoothed", "sharp"] = "sharp"


@dataclass
class BOResult:
    """What one run of :func:`optimise` found, for a batch of ``N`` inputs.

    Attributes:
        mean_map: ``(N, *shape)`` posterior mean rebuilt over pixels (the saliency map).
        std_map: ``(N, *shape)`` posterior standard deviation rebuilt the same way; None
            when :func:`optimise` was asked not to rebuild it.
        half_sizes: ``(N, n, D)`` half-length per axis of every queried window.
        centres: ``(N, n, D)`` centre of every queried window.
        scores: ``(N, n)`` objective value of every queried window.
        lengthscale: ``(N, d)`` final length scales.
        extra_maps: ``(N, K, *shape)`` a map per extra observation of the objective (see
            :data:`Objective`), rebuilt like ``mean_map`` from the same windows and length
            scales, with its own fitted prior mean; None when the objective has none.
        seconds: Wall time spent in the objective (building perturbed inputs, the model)
            and in the optimiser itself (everything else).
    """

    mean_map: Tensor
    std_map: Tensor | None
    half_sizes: Tensor
    centres: Tensor
    scores: Tensor
    lengthscale: Tensor = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    extra_maps: Tensor | None = None


def prior_table(prior: Tensor, space: WindowSpace, how: str) -> Tensor:
    """Prior mean of every window, ``(N, S, *shape)``.

    ``"center"`` takes the prior at the window centre (published); ``"window"`` averages the
    prior over the window.
    """
    if how == "center":
        return prior.unsqueeze(1).expand(-1, space.n_combos, *space.shape)
    axes = list(range(1, space.n_axes + 1))
    return torch.stack(
        [box_mean(prior, space.combos[s].tolist(), axes) for s in range(space.n_combos)], 1
    )


def _flat_index(space: WindowSpace, combos: Tensor, centres: Tensor) -> Tensor:
    index = combos
    for axis, length in enumerate(space.shape):
        index = index * length + centres[..., axis]
    return index


def optimise(
    objective: Objective,
    prior: Tensor,
    space: WindowSpace,
    settings: BOSettings,
    generator: torch.Generator,
    on_step: Callable[[], None] | None = None,
    uncertainty: bool = True,
) -> BOResult:
    """Refine ``prior`` with ``settings.n_iter`` rounds of Bayesian optimisation.

    Every image of the batch has its own GP (one batched model); each round picks
    ``windows_per_step`` windows per image by UCB, on a coarse grid refined locally, and
    asks ``objective`` for all of them in one call.

    Args:
        objective: Scores windows, see :data:`Objective`.
        prior: ``(N, *space.shape)`` normalised prior map (the GP's prior mean).
        space: The windows to search.
        settings: Hyperparameters.
        generator: Source of the jitter added to the GP's copy of each window.
        on_step: Called after every round (progress bars).
        uncertainty: Also rebuild the posterior standard deviation as a map (``std_map``).
            Default: True

    Returns:
        A :class:`BOResult`.
    """
    device = prior.device
    batch = prior.shape[0]
    d = space.n_features
    q = settings.windows_per_step
    prior = prior.to(torch.float64)
    raw_table = prior_table(prior, space, settings.prior_mean).reshape(batch, -1)
    coef = _published_coefficients(batch, space.n_combos, device)

    stride = tuple(settings.acquisition_stride or (1,) * space.n_axes)
    grid = space.grid(stride, device=device)
    raw_grid_prior = raw_table[:, _flat_index(space, grid.combos, grid.centres)]
    grid_penalty = centrality_penalty(grid.centres, space.shape)
    radius = [s - 1 for s in stride]

    start = as_lengthscale(
        settings.lengthscale or (12.0,) * space.n_axes + (10.0,) * space.n_groups, d, device
    )
    jitter_scale = as_lengthscale(
        settings.jitter or (1.0,) * space.n_axes + (0.5,) * space.n_groups, d, device
    )
    jitter = torch.rand(settings.n_iter, q, d, generator=generator, dtype=torch.float64) * 2 - 1
    jitter = jitter.to(device) * jitter_scale

    kernel = make_kernel(batch, start, settings.lengthscale_bounds)
    kernel.requires_grad_(False)
    posterior = GridPosterior(
        kernel, settings.noise, grid.features, raw_grid_prior, settings.n_iter * q, grid.lattice
    )
    rows = torch.arange(batch, device=device)
    all_combos, all_centres, all_scores, all_raw, all_extra = [], [], [], [], []
    refitted = settings.prior_fit == "affine"
    prior_power = raw_table.pow(2).mean(1)
    started_at, objective_seconds = time.perf_counter(), 0.0

    for step in range(settings.n_iter):
        step_combos, step_centres = [], []
        for j in range(q):
            if step == 0 and j == 0:
                combos, centres = _first_window(raw_table, space, device)
            else:
                combos, centres = _acquire(
                    posterior,
                    grid,
                    grid_penalty,
                    raw_table,
                    coef,
                    space,
                    radius,
                    settings.kappa,
                    rows,
                )
            features = space.features(combos, centres) + jitter[step, j]
            posterior.extend(features.unsqueeze(1))
            step_combos.append(combos)
            step_centres.append(centres)
        combos = torch.stack(step_combos, 1)
        centres = torch.stack(step_centres, 1)
        started = time.perf_counter()
        observed_now = objective(combos, centres)
        if isinstance(observed_now, tuple):
            observed_now, extra = observed_now
            all_extra.append(extra.to(device=device, dtype=torch.float64))
        scores = observed_now.to(device=device, dtype=torch.float64)
        objective_seconds += time.perf_counter() - started
        all_combos.append(combos)
        all_centres.append(centres)
        all_scores.append(scores)
        all_raw.append(raw_table.gather(1, _flat_index(space, combos, centres)))
        observed, observed_raw = torch.cat(all_scores, 1), torch.cat(all_raw, 1)
        observed_combos = torch.cat(all_combos, 1)
        if refitted:
            coef = fit_prior_coefficients(
                observed_raw,
                observed_combos,
                observed,
                space.n_combos,
                prior_power,
                settings.prior_fit_strength,
            )
        residuals = observed - _calibrated(observed_raw, coef, observed_combos)
        # A refitted prior mean moves the whole grid's mean; a fixed one lets it update.
        grid_prior = _calibrated(raw_grid_prior, coef, grid.combos) if refitted else None
        posterior.set_residuals(residuals, grid_prior)
        last = step == settings.n_iter - 1
        if last or (step + 1) % settings.refit_every == 0:
            if not settings.warm_start:
                kernel.lengthscale = start.expand(batch, d).unsqueeze(-2)
            fit_lengthscales(kernel, posterior.train_x, posterior.residuals, settings.noise)
            posterior.refactor()
        if on_step is not None:
            on_step()

    table_combos = torch.arange(space.n_combos, device=device)
    table_combos = table_combos.repeat_interleave(raw_table.shape[1] // space.n_combos)

    def rebuilt(coef: Tensor, with_std: bool) -> tuple[Tensor, Tensor | None]:
        """The map (and its standard deviation) of the posterior as it stands."""
        correction, std = _posterior_maps(
            posterior,
            space,
            _calibrated(raw_table, coef, table_combos),
            _calibrated(raw_grid_prior, coef, grid.combos),
            stride,
            settings.exact_map,
            with_std,
        )
        mean = _prior_map(prior, raw_table, coef, space, settings)
        return mean + windows_to_map(correction, space), (
            None if std is None else windows_to_map(std, space)
        )

    mean_map, std_map = rebuilt(coef, uncertainty)
    extra_maps = None
    if all_extra:
        maps = []
        for values in torch.cat(all_extra, 1).unbind(-1):
            extra_coef = coef
            if refitted:
                extra_coef = fit_prior_coefficients(
                    observed_raw,
                    observed_combos,
                    values,
                    space.n_combos,
                    prior_power,
                    settings.prior_fit_strength,
                )
            posterior.set_residuals(
                values - _calibrated(observed_raw, extra_coef, observed_combos),
                _calibrated(raw_grid_prior, extra_coef, grid.combos),
            )
            maps.append(rebuilt(extra_coef, False)[0])
        extra_maps = torch.stack(maps, 1)
    combos = torch.cat(all_combos, 1)
    return BOResult(
        mean_map=mean_map,
        std_map=std_map,
        half_sizes=space.combos.to(device)[combos],
        centres=torch.cat(all_centres, 1),
        scores=torch.cat(all_scores, 1),
        lengthscale=kernel.lengthscale.detach().reshape(batch, d).clone(),
        seconds={
            "objective": objective_seconds,
            "optimiser": time.perf_counter() - started_at - objective_seconds,
        },
        extra_maps=extra_maps,
    )


def _published_coefficients(batch: int, n_combos: int, device: torch.device) -> Tensor:
    """``(N, S + 1)`` offsets 0 and slope 1: the prior mean is the prior itself."""
    coef = torch.zeros(batch, n_combos + 1, dtype=torch.float64, device=device)
    coef[:, -1] = 1.0
    return coef


def _calibrated(values: Tensor, coef: Tensor, combos: Tensor | None) -> Tensor:
    """``a[combo] + b * values`` per image.

    Args:
        values: ``(N, ...)`` prior values.
        coef: ``(N, S + 1)`` an offset per window size and the slope.
        combos: The window size of every value: ``(N, n)`` for ``values (N, n)``, ``(m,)``
            shared by all images for ``values (N, m)``, or None for the mean offset (a map).
    """
    offsets, slope = coef[:, :-1], coef[:, -1]
    if combos is None:
        offset = offsets.mean(1).view((-1,) + (1,) * (values.dim() - 1))
    elif combos.dim() == 1:
        offset = offsets[:, combos]
    else:
        offset = offsets.gather(1, combos)
    return offset + slope.view((-1,) + (1,) * (values.dim() - 1)) * values


def fit_prior_coefficients(
    prior: Tensor,
    combos: Tensor,
    scores: Tensor,
    n_combos: int,
    prior_power: Tensor,
    strength: float,
) -> Tensor:
    r"""Offsets per window size and slope of the prior mean ``a[s] + b * prior``, per image.

    Minimises ``sum_i (y_i - a[s_i] - b p_i)^2 + strength * (|a|^2 + mean(p^2) (b - 1)^2)``:
    least squares of the observations on the prior with one offset per window size (a
    window's size moves its score whatever its place), pulled towards the published mean
    (offsets 0, slope 1) as if by ``strength`` extra observations (the slope's pull is
    scaled by the prior's power ``mean(p^2)`` over all windows, so it does not depend on the
    prior's units). A negative slope (a prior that points the wrong way) is replaced by the
    best offsets with slope 0.

    Args:
        prior: ``(N, n)`` the (uncalibrated) prior mean of each observed window.
        combos: ``(N, n)`` the size (index into the window sizes) of each observed window.
        scores: ``(N, n)`` the observations.
        n_combos: Number of window sizes ``S``.
        prior_power: ``(N,)`` mean squared prior over all windows.
        strength: Weight of the pull towards the published mean, in observations.

    Returns:
        ``(N, S + 1)`` float64: the offsets ``a``, then the slope ``b``.
    """
    batch = prior.shape[0]
    onehot = torch.nn.functional.one_hot(combos, n_combos).to(torch.float64)
    design = torch.cat([onehot, prior.unsqueeze(-1)], -1)
    power = prior_power.clamp(min=torch.finfo(torch.float64).tiny)
    ridge = torch.full((batch, n_combos + 1), float(strength), dtype=torch.float64)
    ridge = ridge.to(prior.device)
    ridge[:, -1] *= power
    target = torch.zeros_like(ridge)
    target[:, -1] = 1.0
    gram = design.transpose(1, 2) @ design + torch.diag_embed(ridge)
    rhs = (design.transpose(1, 2) @ scores.unsqueeze(-1)).squeeze(-1) + ridge * target
    coef = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
    counts = onehot.sum(1)
    flat = torch.cat(
        [
            (onehot * scores.unsqueeze(-1)).sum(1) / (counts + strength),
            torch.zeros_like(ridge[:, :1]),
        ],
        1,
    )
    return torch.where((coef[:, -1] < 0).unsqueeze(-1), flat, coef)


def _prior_map(
    prior: Tensor, raw_table: Tensor, coef: Tensor, space: WindowSpace, settings: BOSettings
) -> Tensor:
    """The map of the (fitted) prior mean: box-averaged like the windows (published), or the
    prior itself with ``map_prior="sharp"``."""
    if settings.map_prior == "sharp":
        values = prior
    elif settings.prior_mean == "center":
        values = average_over_sizes(prior, space)
    else:
        batch = prior.shape[0]
        values = windows_to_map(raw_table.reshape(batch, space.n_combos, *space.shape), space)
    return _calibrated(values, coef, None)


#: The map's lattice is at most this fraction of the smallest fitted length scale apart.
MAP_STRIDE_PER_LENGTHSCALE = 0.75


def map_stride(space: WindowSpace, lengthscale: Tensor, stride: tuple[int, ...]) -> tuple[int, ...]:
    """Stride of the lattice the map is rebuilt from: the acquisition stride, made finer
    where the fitted length scales are short, so that linear interpolation stays accurate.

    Args:
        space: The window space.
        lengthscale: ``(N, d)`` fitted length scales (GP units).
        stride: The acquisition stride per axis.
    """
    shortest = lengthscale[:, : space.n_axes].amin(0).tolist()
    out = []
    for axis, step in enumerate(stride):
        pixels = shortest[axis] * space.pixels_per_unit[axis] * MAP_STRIDE_PER_LENGTHSCALE
        out.append(max(1, min(step, int(pixels))))
    return tuple(out)


def _posterior_maps(
    posterior: GridPosterior,
    space: WindowSpace,
    table: Tensor,
    grid_prior: Tensor,
    stride: tuple[int, ...],
    exact: bool,
    with_std: bool,
) -> tuple[Tensor, Tensor | None]:
    """The GP's correction to the prior mean and its standard deviation at every window,
    ``(N, S, *shape)`` each (the latter only ``with_std``, else None).

    Both come from a lattice -- the acquisition lattice, a finer one for an image whose length
    scales are short (see :func:`map_stride`), or every window when ``exact`` -- and are
    interpolated linearly. Each image's lattice depends on its own length scales only.
    """
    batch = table.shape[0]
    lengthscale = posterior.kernel.lengthscale.detach().reshape(batch, -1)
    axes = list(range(1, space.n_axes + 1))
    corrections, stds = [], []
    for row in range(batch):
        step = (
            (1,) * space.n_axes if exact else map_stride(space, lengthscale[row : row + 1], stride)
        )
        if step == stride:
            correction = posterior.mean[row] - grid_prior[row]
            variance = posterior.variance[row]
        else:
            grid = space.grid(step, device=table.device)
            prior = table[row, _flat_index(space, grid.combos, grid.centres)]
            mean, variance = posterior.predict_lattice(grid.lattice, prior, row)
            correction = mean - prior
        positions = space.axis_centres(step)
        lattice_shape = (space.n_combos, *(len(c) for c in positions))
        corrections.append(
            lattice_to_full(correction.reshape(lattice_shape), positions, space.shape, axes)
        )
        if with_std:
            std = variance.sqrt().reshape(lattice_shape)
            stds.append(lattice_to_full(std, positions, space.shape, axes))
    return torch.stack(corrections), torch.stack(stds) if with_std else None


def _first_window(table: Tensor, space: WindowSpace, device: torch.device) -> tuple[Tensor, Tensor]:
    """The published first query: the prior's maximum at the smallest window size."""
    smallest = table[:, : table.shape[1] // space.n_combos]
    full = space.grid((1,) * space.n_axes, device=device)
    n_centres = smallest.shape[1]
    index = best_index(smallest, centrality_penalty(full.centres[:n_centres], space.shape))
    combos = torch.zeros_like(index)
    return combos, full.centres[index]


def _acquire(
    posterior: GridPosterior,
    grid: WindowGrid,
    grid_penalty: Tensor,
    raw_table: Tensor,
    coef: Tensor,
    space: WindowSpace,
    radius: list[int],
    kappa: float,
    rows: Tensor,
) -> tuple[Tensor, Tensor]:
    """UCB's best window per image: best on the grid, then best among its neighbours."""
    ucb = upper_confidence_bound(posterior.mean, posterior.variance, kappa)
    index = best_index(ucb, grid_penalty)
    combos, centres = grid.combos[index], grid.centres[index]
    if not any(radius):
        return combos, centres
    near = space.neighbourhood(combos, centres, radius)
    near_raw = raw_table.gather(1, _flat_index(space, near.combos, near.centres))
    near_prior = _calibrated(near_raw, coef, near.combos)
    mean, variance = posterior.predict(near.features, near_prior)
    penalty = centrality_penalty(near.centres.reshape(-1, space.n_axes), space.shape)
    best = best_index(upper_confidence_bound(mean, variance, kappa), penalty.view(mean.shape))
    return near.combos[rows, best], near.centres[rows, best]
