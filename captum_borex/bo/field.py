"""The saliency field: a cell-level Gaussian model of what each window query observes.

The input is cut into cells (a ``16 x 16`` grid of an image by default). Each cell ``c``
holds ``f[c]``, its contribution to the target's probability, and a window's query observes
the sum of ``f`` over the cells it covers (in proportion to how much of each it covers) plus
noise: ``y = a_w . f + e``. The prior over ``f`` is Gaussian:

``f = b1 * D * p + b0 * D / n + g``,  ``g ~ GP(0, (alpha * s / n)^2 Matern32(cells / l))``

where ``p`` is the prior map as a density over cells (summing to 1), ``D`` the total effect
(the target's probability on the input less on the keep baseline), ``s = max(|D|, 0.05)``, ``n``
the number of cells, ``b1 ~ N(1, 1)`` and ``b0 ~ N(0, 1)``. The observations are linear in
``f``, so the posterior is Gaussian and exact. The length scale ``l`` (cells), amplitude
``alpha`` and noise are picked per image by marginal likelihood from small grids.

Windows are chosen to be informative about ``f``: the one whose sum is most uncertain under
the posterior (the largest information gain about ``f`` of one observation with fixed
noise), the sum weighted towards the cells the field puts high (``focus``), which deletion
and insertion read first. Large windows come first; as their sums are pinned down the
variance moves to smaller ones, so the search runs coarse to fine by itself.

Free of Captum: it knows cells, windows and an objective that scores windows.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_borex.bo.acquisition import best_index, centrality_penalty
from captum_borex.bo.windows import WindowSpace, smoothed_over_windows

#: Candidate length scales of the residual field, in cells.
LENGTHSCALES = (1.0, 2.0, 4.0)
#: Candidate amplitudes of the residual field, in ``s / n`` (``s``: the total effect).
AMPLITUDES = (1.0, 3.0, 10.0)
#: Candidate observation noise standard deviations, in ``s``.
NOISES = (0.02, 0.05, 0.15)
#: Prior standard deviations of the prior map's slope ``b1`` (mean 1) and offset ``b0`` (mean 0).
SLOPE_STD, OFFSET_STD = 1.0, 1.0
#: The total effect's floor in the scale ``s``: a model barely moved by the baseline still
#: gets a field of this size.
SCALE_FLOOR = 0.05
#: Images refined at once when the candidates' variances are computed (bounds memory).
CHUNK = 16

#: Scores windows: ``objective(combos (N, q), centres (N, q, D)) -> y (N, q)`` in the
#: model's probability units, linear in the field.
FieldObjective = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FieldSettings:
    """What one :func:`refine_field` run does, built by
    :class:`~captum_borex.attr.BOREx` from its settings.

    Attributes:
        n_iter: Rounds; one window per image a round.
        cells: Cells along each axis of the input.
        refit_every: Pick the hyperparameters again after every this many rounds (and after
            the last).
        acquisition_stride: Centres of candidate windows are this many pixels (frames)
            apart, per axis.
        smoothing: The field's correction to the prior is box-filtered over ``smoothing``
            times the smallest window's half-size (0: not at all).
        windows_per_step: Windows per round, chosen one after another, each given the ones
            before (the variance does not depend on the values still to be observed).
        focus: How much the choice favours cells the field puts high: the variance is of
            the window's sum weighted by ``n * softmax(focus * mean / max|mean|)`` over
            cells (0: plain variance, every cell alike).
    """

    n_iter: int
    cells: tuple[int, ...]
    refit_every: int
    acquisition_stride: tuple[int, ...]
    smoothing: float
    windows_per_step: int
    focus: float


@dataclass
class FieldResult:
    """What :func:`refine_field` found, for a batch of ``N`` inputs.

    Attributes:
        map: ``(N, *shape)`` posterior mean of the field as a density over pixels: each
            pixel's contribution to the target's probability (a region's sum is the
            probability it adds).
        std_map: ``(N, *shape)`` posterior standard deviation of each cell over its prior
            standard deviation, in [0, 1] (1 where nothing was learnt), upsampled.
        half_sizes: ``(N, n, D)`` half-length per axis of every queried window.
        centres: ``(N, n, D)`` centre of every queried window.
        scores: ``(N, n)`` what each query observed.
        hyperparameters: ``(N, 3)`` the chosen length scale (cells), amplitude and noise.
        seconds: Wall time spent in the objective and in the optimiser.
    """

    map: Tensor
    std_map: Tensor
    half_sizes: Tensor
    centres: Tensor
    scores: Tensor
    hyperparameters: Tensor
    seconds: dict[str, float] = field(default_factory=dict)


class CellGrid:
    """Cells of an input: pixel ``i`` of an axis of length ``L`` with ``g`` cells lies in
    cell ``floor(i * g / L)``."""

    def __init__(self, shape: Sequence[int], cells: Sequence[int], device: torch.device) -> None:
        self.shape = tuple(shape)
        self.cells = tuple(min(c, length) for c, length in zip(cells, shape))
        self.n = math.prod(self.cells)
        #: Per axis, ``(L, g)`` one-hot of each pixel's cell, as float64.
        self.members = [
            F.one_hot(torch.arange(length, device=device) * g // length, g).to(torch.float64)
            for length, g in zip(self.shape, self.cells)
        ]
        self.counts = [m.sum(0) for m in self.members]
        axes = [torch.arange(g, dtype=torch.float64, device=device) for g in self.cells]
        mesh = torch.meshgrid(*axes, indexing="ij")
        #: ``(n, D)`` cell coordinates, in cells.
        self.coords = torch.stack([m.flatten() for m in mesh], -1)

    def coverage(self, space: WindowSpace, combos: Tensor, centres: Tensor) -> Tensor:
        """``(B, n)`` the fraction of each cell that each window covers."""
        out = None
        for axis, inside in enumerate(space.axis_masks(combos, centres)):
            part = inside.to(torch.float64) @ self.members[axis] / self.counts[axis]  # (B, g)
            out = part if out is None else (out.unsqueeze(-1) * part.unsqueeze(1)).flatten(1)
        assert out is not None
        return out

    def pool(self, maps: Tensor) -> Tensor:
        """``(N, *shape) -> (N, n)``: the sum of each cell's pixels."""
        out = maps.to(torch.float64)
        for axis in range(len(self.shape)):
            out = torch.tensordot(out, self.members[axis], dims=([1], [0]))
        return out.flatten(1)

    def upsample(self, values: Tensor) -> Tensor:
        """``(N, n)`` cell values (per pixel) to ``(N, *shape)``, (bi/tri)linearly."""
        batch = values.shape[0]
        mode = "bilinear" if len(self.shape) == 2 else "trilinear"
        grid = values.view(batch, 1, *self.cells)
        return F.interpolate(grid, size=self.shape, mode=mode, align_corners=False)[:, 0]

    def matern(self, lengthscale: float) -> Tensor:
        """``(n, n)`` Matérn-3/2 correlation between cells."""
        distance = torch.cdist(self.coords, self.coords) * math.sqrt(3.0) / lengthscale
        return (1 + distance) * torch.exp(-distance)


class _Model:
    """Each image's Gaussian prior over its field: the bases ``D * p`` and ``D / n``, the
    scale ``s`` and the chosen hyperparameters."""

    def __init__(self, cells: CellGrid, prior: Tensor, total: Tensor) -> None:
        self.cells = cells
        density = _density(prior)
        total = total.to(torch.float64)
        #: ``(N,)`` the total effect ``D``.
        self.total = total
        self.scale = total.abs().clamp(min=SCALE_FLOOR)
        self.density = density
        self.slope_basis = total[:, None] * cells.pool(density)  # (N, n)
        self.offset_basis = (total / cells.n)[:, None].expand(-1, cells.n)
        self.correlations = torch.stack([cells.matern(ls) for ls in LENGTHSCALES])
        batch = prior.shape[0]
        self.choice = torch.zeros(batch, 3, dtype=torch.long, device=prior.device)
        self.choice[:, 0] = LENGTHSCALES.index(2.0)
        self.choice[:, 1] = AMPLITUDES.index(3.0)
        self.choice[:, 2] = NOISES.index(0.05)

    def residual_scale(self, amplitude: Tensor) -> Tensor:
        return amplitude * self.scale / self.cells.n

    def hyperparameters(self) -> tuple[Tensor, Tensor, Tensor]:
        """Each image's ``(N, n, n)`` residual covariance, ``(N,)`` amplitude scale and
        ``(N,)`` noise variance."""
        device = self.scale.device
        amplitude = torch.tensor(AMPLITUDES, dtype=torch.float64, device=device)[self.choice[:, 1]]
        noise = torch.tensor(NOISES, dtype=torch.float64, device=device)[self.choice[:, 2]]
        residual = (
            self.correlations[self.choice[:, 0]]
            * self.residual_scale(amplitude).pow(2)[:, None, None]
        )
        return residual, amplitude, (noise * self.scale).pow(2)

    def covariance(self) -> Tensor:
        """``(N, n, n)`` the prior covariance of the field."""
        residual, _, _ = self.hyperparameters()
        return (
            residual
            + SLOPE_STD**2 * _outer(self.slope_basis)
            + OFFSET_STD**2 * _outer(self.offset_basis)
        )

    @property
    def mean(self) -> Tensor:
        """``(N, n)`` the prior mean of the field: the prior map, scaled to the total effect."""
        return self.slope_basis

    def choose(self, design: Tensor, observed: Tensor) -> None:
        """Pick each image's length scale, amplitude and noise by marginal likelihood."""
        best = torch.full_like(self.scale, -math.inf)
        slope = design @ self.slope_basis.unsqueeze(-1)
        offset = design @ self.offset_basis.unsqueeze(-1)
        fixed = SLOPE_STD**2 * _outer(slope[..., 0]) + OFFSET_STD**2 * _outer(offset[..., 0])
        residual = observed - slope[..., 0]
        eye = torch.eye(design.shape[1], dtype=torch.float64, device=design.device)
        for i, correlation in enumerate(self.correlations):
            projected = design @ correlation @ design.transpose(1, 2)
            for j, k in itertools.product(range(len(AMPLITUDES)), range(len(NOISES))):
                amp = self.residual_scale(torch.full_like(self.scale, AMPLITUDES[j]))
                noise = (NOISES[k] * self.scale).pow(2)
                gram = projected * amp.pow(2)[:, None, None] + fixed + noise[:, None, None] * eye
                value = _log_likelihood(gram, residual)
                better = value > best
                best = torch.where(better, value, best)
                self.choice[better] = torch.tensor([i, j, k], device=self.choice.device)


def _outer(v: Tensor) -> Tensor:
    return v.unsqueeze(-1) * v.unsqueeze(-2)


def _density(prior: Tensor) -> Tensor:
    """The prior's positive part as a density over pixels (summing to 1); uniform where
    the prior has no positive part."""
    positive = prior.to(torch.float64).clamp(min=0)
    flat = positive.flatten(1)
    total = flat.sum(1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    density = torch.where(total > 0, flat / total.clamp(min=torch.finfo(flat.dtype).tiny), uniform)
    return density.view_as(prior)


def _log_likelihood(gram: Tensor, residual: Tensor) -> Tensor:
    """``(N,)`` log density (up to a constant) of ``residual (N, m)`` under ``N(0, gram)``."""
    chol, info = torch.linalg.cholesky_ex(gram)
    solved = torch.cholesky_solve(residual.unsqueeze(-1), chol)[..., 0]
    value = -0.5 * (residual * solved).sum(-1) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return torch.where(info == 0, value, torch.full_like(value, -math.inf))


class _Posterior:
    """The Gaussian posterior of every image's field given its observations so far."""

    def __init__(self, model: _Model) -> None:
        self.model = model
        self.design: list[Tensor] = []
        self.observed: list[Tensor] = []
        self.reset()

    def reset(self) -> None:
        """The posterior from scratch, under the model's current hyperparameters."""
        model = self.model
        self.prior_cov = model.covariance()
        self.noise = model.hyperparameters()[2]
        self.mean, self.cov = model.mean.clone(), self.prior_cov.clone()
        if self.design:
            design, observed = torch.cat(self.design, 1), torch.cat(self.observed, 1)
            gain = self.prior_cov @ design.transpose(1, 2)  # (N, n, m)
            gram = design @ gain + self.noise[:, None, None] * torch.eye(
                design.shape[1], dtype=torch.float64, device=design.device
            )
            chol = torch.linalg.cholesky(gram)
            residual = observed - (design @ model.mean.unsqueeze(-1))[..., 0]
            weights = torch.cholesky_solve(residual.unsqueeze(-1), chol)
            self.weights = weights[..., 0]
            self.mean = model.mean + (gain @ weights)[..., 0]
            solved = torch.cholesky_solve(gain.transpose(1, 2), chol)
            self.cov = self.prior_cov - gain @ solved

    def observe(self, coverage: Tensor, observed: Tensor) -> None:
        """A rank-one update with one window per image, ``coverage (N, n)``, ``observed (N,)``."""
        self.design.append(coverage.unsqueeze(1))
        self.observed.append(observed.unsqueeze(1))
        shared = (self.cov @ coverage.unsqueeze(-1))[..., 0]  # (N, n)
        denominator = (coverage * shared).sum(-1) + self.noise
        innovation = observed - (coverage * self.mean).sum(-1)
        self.mean = self.mean + shared * (innovation / denominator)[:, None]
        self.cov = self.cov - _outer(shared) / denominator[:, None, None]

    def refit(self) -> None:
        design, observed = torch.cat(self.design, 1), torch.cat(self.observed, 1)
        self.model.choose(design, observed)
        self.reset()

    def choose(self, candidates: Tensor, penalty: Tensor, count: int, focus: float) -> Tensor:
        """``(N, count)`` indices of the candidates to query next: one after another, each
        the most uncertain (in the weighted sense of :attr:`FieldSettings.focus`) given
        the ones before."""
        cov, picked = self.cov, []
        weights = _focus_weights(self.mean, focus)
        for _ in range(count):
            index = best_index(_window_variance(cov, candidates, weights), penalty)
            picked.append(index)
            coverage = candidates[index]
            shared = (cov @ coverage.unsqueeze(-1))[..., 0]
            denominator = (coverage * shared).sum(-1) + self.noise
            cov = cov - _outer(shared) / denominator[:, None, None]
        return torch.stack(picked, 1)

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """The posterior means of the slope, the offset and the residual field ``(N, n)``."""
        model = self.model
        if not self.design:
            batch = model.scale.shape[0]
            ones = torch.ones(batch, dtype=torch.float64, device=model.scale.device)
            return ones, torch.zeros_like(ones), torch.zeros_like(model.mean)
        design = torch.cat(self.design, 1)
        back = (design.transpose(1, 2) @ self.weights.unsqueeze(-1))[..., 0]  # (N, n)
        slope = 1 + SLOPE_STD**2 * (model.slope_basis * back).sum(-1)
        offset = OFFSET_STD**2 * (model.offset_basis * back).sum(-1)
        residual, _, _ = model.hyperparameters()
        return slope, offset, (residual @ back.unsqueeze(-1))[..., 0]


def _focus_weights(mean: Tensor, focus: float) -> Tensor | None:
    """``(N, n)`` weights of the cells in the acquisition, or None for all alike."""
    if focus == 0:
        return None
    peak = mean.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(mean.dtype).tiny)
    return mean.shape[-1] * torch.softmax(focus * mean / peak, -1)


def _window_variance(cov: Tensor, candidates: Tensor, weights: Tensor | None) -> Tensor:
    """``(N, K)`` variance of each candidate window's (weighted) sum under covariances
    ``(N, n, n)``."""
    out = []
    for i, part in enumerate(cov.split(CHUNK)):
        if weights is None:
            shared = torch.einsum("kn,bnm->bkm", candidates, part)
            out.append((shared * candidates).sum(-1))
        else:
            weighted = candidates * weights[i * CHUNK : i * CHUNK + part.shape[0], None]
            shared = torch.einsum("bkn,bnm->bkm", weighted, part)
            out.append((shared * weighted).sum(-1))
    return torch.cat(out)


def refine_field(
    objective: FieldObjective,
    prior: Tensor,
    total: Tensor,
    space: WindowSpace,
    settings: FieldSettings,
    on_step: Callable[[], None] | None = None,
) -> FieldResult:
    """Refine ``prior`` with ``settings.n_iter`` window queries per input (see the module).

    Args:
        objective: Scores windows, see :data:`FieldObjective`.
        prior: ``(N, *space.shape)`` the prior map (its positive part is used, as a density).
        total: ``(N,)`` the total effect ``D``: the score of the input less the baseline's.
        space: The windows to search.
        settings: What to do.
        on_step: Called after every round (progress bars).

    Returns:
        A :class:`FieldResult`.
    """
    started_at, objective_seconds = time.perf_counter(), 0.0
    device = prior.device
    cells = CellGrid(space.shape, settings.cells, device)
    posterior = _Posterior(_Model(cells, prior, total))
    grid = space.grid(settings.acquisition_stride, device=device)
    candidates = cells.coverage(space, grid.combos, grid.centres)
    penalty = centrality_penalty(grid.centres, space.shape)
    picked_combos, picked_centres, scores = [], [], []
    for step in range(settings.n_iter):
        index = posterior.choose(candidates, penalty, settings.windows_per_step, settings.focus)
        combos, centres = grid.combos[index], grid.centres[index]
        started = time.perf_counter()
        observed = objective(combos, centres).to(torch.float64)
        objective_seconds += time.perf_counter() - started
        for j in range(index.shape[1]):
            posterior.observe(candidates[index[:, j]], observed[:, j])
        if step == settings.n_iter - 1 or (step + 1) % settings.refit_every == 0:
            posterior.refit()
        picked_combos.append(combos)
        picked_centres.append(centres)
        scores.append(observed)
        if on_step is not None:
            on_step()
    result = FieldResult(
        map=_field_map(posterior, cells, space, settings),
        std_map=_std_map(posterior, cells),
        half_sizes=space.combos.to(device)[torch.cat(picked_combos, 1)],
        centres=torch.cat(picked_centres, 1),
        scores=torch.cat(scores, 1),
        hyperparameters=_chosen(posterior.model),
    )
    result.seconds = {
        "objective": objective_seconds,
        "optimiser": time.perf_counter() - started_at - objective_seconds,
    }
    return result


def _field_map(
    posterior: _Posterior, cells: CellGrid, space: WindowSpace, settings: FieldSettings
) -> Tensor:
    """The posterior mean as a density over pixels: the prior map at its own resolution,
    scaled by the fitted slope and shifted by the offset, plus the residual field spread
    over each cell's pixels (box-smoothed with ``settings.smoothing``: the residual is known
    at the windows' scale, while the prior keeps its own detail)."""
    model = posterior.model
    slope, offset, residual = posterior.components()
    view = (-1,) + (1,) * len(cells.shape)
    per_cell = torch.stack(_cell_sizes(cells)).prod(0)
    correction = cells.upsample(residual / per_cell)
    correction = smoothed_over_windows(correction, space, settings.smoothing)
    return (
        (slope * model.total).view(view) * model.density
        + (offset * model.total / math.prod(cells.shape)).view(view)
        + correction
    )


def _cell_sizes(cells: CellGrid) -> list[Tensor]:
    """Pixels per cell as one ``(n,)`` tensor per axis."""
    grids = torch.meshgrid(*cells.counts, indexing="ij")
    return [g.flatten() for g in grids]


def _std_map(posterior: _Posterior, cells: CellGrid) -> Tensor:
    """Posterior over prior standard deviation of each cell, upsampled: in [0, 1]."""
    prior = posterior.prior_cov.diagonal(dim1=-2, dim2=-1).clamp(min=1e-300).sqrt()
    post = posterior.cov.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()
    return cells.upsample((post / prior).clamp(0, 1)).clamp(0, 1)


def _chosen(model: _Model) -> Tensor:
    table = [LENGTHSCALES, AMPLITUDES, NOISES]
    columns = [
        torch.tensor(values, dtype=torch.float64, device=model.choice.device)[model.choice[:, i]]
        for i, values in enumerate(table)
    ]
    return torch.stack(columns, 1)
