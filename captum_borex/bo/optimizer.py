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
    box_mean,
    lattice_to_full,
    windows_to_map,
    windows_to_size_maps,
)
from captum_borex.bo.surrogate import GridPosterior, as_lengthscale, fit_lengthscales, make_kernel
from captum_borex.bo.windows import WindowSpace

#: Scores windows: ``objective(combos (N, q), centres (N, q, D)) -> y (N, q)``, or
#: ``(y, extra)`` with ``extra (N, q, K)``: K more quantities observed at the same windows,
#: each rebuilt as a map at the end (see :attr:`BOResult.extra_maps`) without steering the search.
Objective = Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class BOSettings:
    """Hyperparameters of the BOREx optimiser, built from
    :class:`~captum_borex.attr.BORExSettings` (where each is documented, with its default).

    Length scales, their bounds and the jitter are in GP units (see :class:`WindowSpace`);
    ``None`` means 12 for every centre feature, 10 for every size feature, jitter 1 for
    centres and 0.5 for sizes. ``acquisition_stride`` is one stride per axis.
    """

    n_iter: int
    kappa: float
    lengthscale: Sequence[float] | None
    lengthscale_bounds: tuple[float, float]
    noise: float
    jitter: Sequence[float] | None
    acquisition_stride: Sequence[int]
    refit_every: int
    warm_start: bool
    windows_per_step: int
    prior_mean: Literal["center", "window"]
    exact_map: bool
    prior_fit: Literal["fixed", "affine"]
    prior_fit_strength: float
    map_prior: Literal["smoothed", "sharp"]


@dataclass
class BOResult:
    """What one run of :func:`optimise` found, for a batch of ``N`` inputs.

    Attributes:
        size_maps: ``(N, S, *shape)`` posterior mean rebuilt over pixels, one map per window
            size (each pixel: the mean over the windows of that size covering it).
        std_map: ``(N, *shape)`` posterior standard deviation rebuilt the same way and
            averaged over sizes; None when :func:`optimise` was asked not to rebuild it.
        half_sizes: ``(N, n, D)`` half-length per axis of every queried window.
        centres: ``(N, n, D)`` centre of every queried window.
        scores: ``(N, n)`` objective value of every queried window.
        lengthscale: ``(N, d)`` final length scales.
        extra_size_maps: ``(N, K, S, *shape)`` size maps per extra observation of the
            objective (see :data:`Objective`), rebuilt like ``size_maps`` from the same
            windows and length scales, with its own fitted prior mean; None when the
            objective has none.
        seconds: Wall time spent in the objective (building perturbed inputs, the model)
            and in the optimiser itself (everything else).
    """

    size_maps: Tensor
    std_map: Tensor | None
    half_sizes: Tensor
    centres: Tensor
    scores: Tensor
    lengthscale: Tensor = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    extra_size_maps: Tensor | None = None

    @property
    def mean_map(self) -> Tensor:
        """``(N, *shape)`` the saliency map on the GP's scale: the mean of the size maps."""
        return self.size_maps.mean(1)

    @property
    def extra_maps(self) -> Tensor | None:
        """``(N, K, *shape)`` the map of each extra observation, or None."""
        return None if self.extra_size_maps is None else self.extra_size_maps.mean(2)


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
    started_at, objective_seconds = time.perf_counter(), 0.0
    search = _Search(prior, space, settings, generator)
    for step in range(settings.n_iter):
        combos, centres = search.pick(step)
        started = time.perf_counter()
        observed = objective(combos, centres)
        objective_seconds += time.perf_counter() - started
        search.observe(combos, centres, observed)
        if step == settings.n_iter - 1 or (step + 1) % settings.refit_every == 0:
            search.refit()
        if on_step is not None:
            on_step()
    result = search.result(uncertainty)
    result.seconds = {
        "objective": objective_seconds,
        "optimiser": time.perf_counter() - started_at - objective_seconds,
    }
    return result


class _Search:
    """One run's state: the acquisition grid, the batched GP, the prior mean's coefficients
    and every observation so far."""

    def __init__(
        self, prior: Tensor, space: WindowSpace, settings: BOSettings, generator: torch.Generator
    ) -> None:
        device = prior.device
        batch, d, q = prior.shape[0], space.n_features, settings.windows_per_step
        self.space, self.settings, self.device = space, settings, device
        self.prior = prior.to(torch.float64)
        self.raw_table = prior_table(self.prior, space, settings.prior_mean).reshape(batch, -1)
        self.coef = _published_coefficients(batch, space.n_combos, device)
        self.refitted = settings.prior_fit == "affine"
        self.prior_power = self.raw_table.pow(2).mean(1)
        self.stride = tuple(settings.acquisition_stride)
        self.grid = space.grid(self.stride, device=device)
        grid_index = _flat_index(space, self.grid.combos, self.grid.centres)
        self.raw_grid_prior = self.raw_table[:, grid_index]
        self.grid_penalty = centrality_penalty(self.grid.centres, space.shape)
        self.start = as_lengthscale(
            settings.lengthscale or (12.0,) * space.n_axes + (10.0,) * space.n_groups, d, device
        )
        jitter_scale = as_lengthscale(
            settings.jitter or (1.0,) * space.n_axes + (0.5,) * space.n_groups, d, device
        )
        jitter = torch.rand(settings.n_iter, q, d, generator=generator, dtype=torch.float64)
        self.jitter = (jitter * 2 - 1).to(device) * jitter_scale
        self.kernel = make_kernel(batch, self.start, settings.lengthscale_bounds)
        self.kernel.requires_grad_(False)
        self.posterior = GridPosterior(
            self.kernel,
            settings.noise,
            self.grid.features,
            self.raw_grid_prior,
            settings.n_iter * q,
            self.grid.lattice,
        )
        self.rows = torch.arange(batch, device=device)
        self.combos: list[Tensor] = []
        self.centres: list[Tensor] = []
        self.scores: list[Tensor] = []
        self.raw: list[Tensor] = []
        self.extra: list[Tensor] = []

    def pick(self, step: int) -> tuple[Tensor, Tensor]:
        """This round's windows, ``(N, q)`` sizes and ``(N, q, D)`` centres, added to the
        GP's inputs (jittered); the first ever is the prior's maximum (published)."""
        picked_combos, picked_centres = [], []
        for j in range(self.settings.windows_per_step):
            if step == 0 and j == 0:
                combos, centres = _first_window(self.raw_table, self.space, self.device)
            else:
                combos, centres = self._acquire()
            features = self.space.features(combos, centres) + self.jitter[step, j]
            self.posterior.extend(features.unsqueeze(1))
            picked_combos.append(combos)
            picked_centres.append(centres)
        return torch.stack(picked_combos, 1), torch.stack(picked_centres, 1)

    def _acquire(self) -> tuple[Tensor, Tensor]:
        """UCB's best window per image: best on the grid, then best among its neighbours."""
        kappa, space = self.settings.kappa, self.space
        ucb = upper_confidence_bound(self.posterior.mean, self.posterior.variance, kappa)
        index = best_index(ucb, self.grid_penalty)
        combos, centres = self.grid.combos[index], self.grid.centres[index]
        radius = [s - 1 for s in self.stride]
        if not any(radius):
            return combos, centres
        near = space.neighbourhood(combos, centres, radius)
        near_raw = self.raw_table.gather(1, _flat_index(space, near.combos, near.centres))
        mean, variance = self.posterior.predict(
            near.features, _calibrated(near_raw, self.coef, near.combos)
        )
        penalty = centrality_penalty(near.centres.reshape(-1, space.n_axes), space.shape)
        best = best_index(upper_confidence_bound(mean, variance, kappa), penalty.view(mean.shape))
        return near.combos[self.rows, best], near.centres[self.rows, best]

    def observe(
        self, combos: Tensor, centres: Tensor, observed: Tensor | tuple[Tensor, Tensor]
    ) -> None:
        """Record this round's observations, refit the prior mean's coefficients and
        update the GP's residuals."""
        if isinstance(observed, tuple):
            observed, extra = observed
            self.extra.append(extra.to(device=self.device, dtype=torch.float64))
        self.combos.append(combos)
        self.centres.append(centres)
        self.scores.append(observed.to(device=self.device, dtype=torch.float64))
        self.raw.append(self.raw_table.gather(1, _flat_index(self.space, combos, centres)))
        scores = torch.cat(self.scores, 1)
        self.coef = self._coefficients(scores)
        self._set_residuals(scores, self.coef)

    def _coefficients(self, scores: Tensor) -> Tensor:
        """The prior mean's offsets and slope for these observations (fixed unless
        ``prior_fit="affine"``)."""
        if not self.refitted:
            return self.coef
        return fit_prior_coefficients(
            torch.cat(self.raw, 1),
            torch.cat(self.combos, 1),
            scores,
            self.space.n_combos,
            self.prior_power,
            self.settings.prior_fit_strength,
        )

    def _set_residuals(self, scores: Tensor, coef: Tensor) -> None:
        residuals = scores - _calibrated(torch.cat(self.raw, 1), coef, torch.cat(self.combos, 1))
        # A refitted prior mean moves the whole grid's mean; a fixed one lets it update.
        grid_prior = _calibrated(self.raw_grid_prior, coef, self.grid.combos)
        self.posterior.set_residuals(residuals, grid_prior if self.refitted else None)

    def refit(self) -> None:
        """Refit the length scales (from the start values unless ``warm_start``)."""
        if not self.settings.warm_start:
            batch, d = self.prior.shape[0], self.space.n_features
            self.kernel.lengthscale = self.start.expand(batch, d).unsqueeze(-2)
        fit_lengthscales(
            self.kernel, self.posterior.train_x, self.posterior.residuals, self.settings.noise
        )
        self.posterior.refactor()

    def _maps(self, coef: Tensor, with_std: bool) -> tuple[Tensor, Tensor | None]:
        """The size maps (and the standard deviation's map) of the posterior as it stands."""
        space = self.space
        table_combos = torch.arange(space.n_combos, device=self.device)
        table_combos = table_combos.repeat_interleave(self.raw_table.shape[1] // space.n_combos)
        correction, std = _posterior_maps(
            self.posterior,
            space,
            _calibrated(self.raw_table, coef, table_combos),
            _calibrated(self.raw_grid_prior, coef, self.grid.combos),
            self.stride,
            self.settings.exact_map,
            with_std,
        )
        prior = _prior_size_maps(self.prior, self.raw_table, coef, space, self.settings)
        return prior + windows_to_size_maps(correction, space), (
            None if std is None else windows_to_map(std, space)
        )

    def _extra_maps(self) -> Tensor | None:
        """Size maps per extra observation, from the same windows and length scales, each with
        its own fitted prior mean."""
        if not self.extra:
            return None
        maps = []
        for values in torch.cat(self.extra, 1).unbind(-1):
            coef = self._coefficients(values)
            self._set_residuals(values, coef)
            maps.append(self._maps(coef, False)[0])
        return torch.stack(maps, 1)

    def result(self, uncertainty: bool) -> BOResult:
        """The maps and what was observed."""
        size_maps, std_map = self._maps(self.coef, uncertainty)
        combos = torch.cat(self.combos, 1)
        batch = self.prior.shape[0]
        return BOResult(
            size_maps=size_maps,
            std_map=std_map,
            half_sizes=self.space.combos.to(self.device)[combos],
            centres=torch.cat(self.centres, 1),
            scores=torch.cat(self.scores, 1),
            lengthscale=self.kernel.lengthscale.detach().reshape(batch, -1).clone(),
            extra_size_maps=self._extra_maps(),
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


def _prior_size_maps(
    prior: Tensor, raw_table: Tensor, coef: Tensor, space: WindowSpace, settings: BOSettings
) -> Tensor:
    """The (fitted) prior mean's part of each size map, ``(N, S, *shape)``: box-averaged
    like the windows (published), or the prior itself with ``map_prior="sharp"``; each size
    with its own fitted offset."""
    batch, sizes = prior.shape[0], space.n_combos
    if settings.map_prior == "sharp":
        values = prior.unsqueeze(1).expand(-1, sizes, *space.shape)
    elif settings.prior_mean == "center":
        values = windows_to_size_maps(prior.unsqueeze(1).expand(-1, sizes, *space.shape), space)
    else:
        values = windows_to_size_maps(raw_table.reshape(batch, sizes, *space.shape), space)
    offsets, slope = coef[:, :-1], coef[:, -1]
    view = (batch, sizes) + (1,) * space.n_axes
    return offsets.view(view) + slope.view(batch, *(1,) * (space.n_axes + 1)) * values


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
