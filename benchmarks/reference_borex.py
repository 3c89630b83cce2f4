"""A straightforward, per-image implementation of the published BOREx algorithm.

Used only as the yardstick in ``benchmarks/speed.py``: scikit-learn's exact GP, length
scales refitted from scratch at every step, posterior mean and standard deviation on the full
window grid at every step, box filters for the map. No batching, no shortcuts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import uniform_filter
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern


def _box_mean(values: np.ndarray, half: int) -> np.ndarray:
    size = 2 * half + 1
    total = uniform_filter(values, size=size, mode="constant", cval=0.0)
    count = uniform_filter(np.ones_like(values), size=size, mode="constant", cval=0.0)
    return total / count


def published_borex(
    score: Callable[[int, int, int], float],
    prior: np.ndarray,
    half_sizes: Sequence[int],
    n_iter: int = 50,
    kappa: float = 10.0,
    noise: float = 0.01,
    jitter: Sequence[float] = (1.0, 1.0, 0.5),
    seed: int = 0,
) -> np.ndarray:
    """Refine one ``(H, W)`` prior map (already normalised); returns the ``(H, W)`` map.

    Args:
        score: ``score(row, col, half_size) -> y`` the objective of one window.
        prior: Normalised prior, the GP's prior mean at window centres.
        half_sizes: Window half-sizes, ascending.
        n_iter: Number of queries.
        kappa: UCB exploration weight.
        noise: Observation noise variance.
        jitter: Uniform jitter half-widths added to the GP's copy of each window.
        seed: Seed of the jitter.
    """
    rng = np.random.default_rng(seed)
    height, width = prior.shape
    rows, cols, sizes = np.meshgrid(
        np.arange(height), np.arange(width), np.asarray(half_sizes), indexing="ij"
    )
    grid = np.stack([rows.ravel(), cols.ravel(), sizes.ravel()], 1).astype(float)
    grid_prior = prior[rows.ravel(), cols.ravel()]
    first = np.unravel_index(np.argmax(prior), prior.shape)
    window = np.array([first[0], first[1], half_sizes[0]], dtype=float)
    xs, residuals = [], []

    def fit() -> GaussianProcessRegressor:
        kernel = Matern(length_scale=[12.0, 12.0, 10.0], length_scale_bounds=(1.0, 20.0), nu=1.5)
        gp = GaussianProcessRegressor(kernel=kernel, alpha=noise, normalize_y=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gp.fit(np.array(xs), np.array(residuals))

    for _ in range(n_iter):
        r, c, s = (int(v) for v in window)
        y = score(r, c, s)
        xs.append(window + rng.uniform(-1, 1, 3) * np.asarray(jitter))
        residuals.append(y - prior[r, c])
        gp = fit()
        mean, std = gp.predict(grid, return_std=True)
        window = grid[np.argmax(grid_prior + mean + kappa * std)]

    mean = (grid_prior + gp.predict(grid)).reshape(height, width, len(half_sizes))
    maps = [_box_mean(mean[..., i], half) for i, half in enumerate(half_sizes)]
    return np.mean(maps, 0)
