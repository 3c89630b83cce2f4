"""The field model (``surrogate="field"``): an exact posterior over cells."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_borex import BOREx, BORExSettings
from captum_borex.attr._window_args import window_space
from captum_borex.bo.field import CellGrid, FieldSettings, refine_field

SIDE = 32


class Additive(nn.Module):
    """A model whose target probability is ``0.1 + sum(weights * mean over channels)``:
    every pixel adds its weight, exactly, so the true map is known."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.1 + (x.mean(1) * self.weights).flatten(1).sum(1)
        return torch.stack([p, 1 - p], 1)


def blob_weights(centre: tuple[int, int], radius: int, total: float = 0.8) -> torch.Tensor:
    """A disc of weight summing to ``total``."""
    rows, cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    disc = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).float()
    return disc / disc.sum() * total


def explain(weights: torch.Tensor, prior, n_iter: int, **settings):
    model = Additive(weights)
    x = torch.ones(1, 3, SIDE, SIDE)
    # A blurred copy of a flat image is the image: keep queries show windows on zeros.
    settings = dict(surrogate="field", apply_softmax=False, keep_baselines=None, **settings)
    borex = BOREx(model, prior=prior, settings=BORExSettings(**settings))
    return borex.attribute(x, target=0, n_iter=n_iter, seed=0, return_details=True)


def top_overlap(refined: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of the pixels that carry weight in ``truth`` among as many top pixels of
    ``refined``."""
    support = truth.flatten() > 0
    top = refined.flatten().topk(int(support.sum())).indices
    return float(support[top].float().mean())


def test_a_sparse_exact_prior_keeps_its_detail():
    # Two single pixels carry all the weight: far finer than a cell (2 x 2 pixels).
    weights = torch.zeros(SIDE, SIDE)
    weights[8, 9], weights[20, 25] = 0.5, 0.3
    details = explain(weights, weights[None].clone(), n_iter=20)
    refined = details.attributions[0, 0]
    assert set(refined.flatten().topk(2).indices.tolist()) == {8 * SIDE + 9, 20 * SIDE + 25}
    # The two pixels keep most of the map's mass, and their ratio.
    assert refined[8, 9] > 0.3 and refined[20, 25] > 0.15
    assert refined[8, 9] / refined[20, 25] == pytest.approx(5 / 3, rel=0.25)


def test_a_flat_prior_finds_the_object_and_the_map_sums_to_the_effect():
    weights = blob_weights((10, 22), 4)
    details = explain(weights, None, n_iter=30)
    refined = details.attributions[0, 0]
    assert top_overlap(refined, weights) > 0.8
    # The map is each pixel's share of the probability: it sums to the total effect.
    assert float(refined.sum()) == pytest.approx(0.8, abs=0.08)


def test_a_wrong_prior_is_corrected():
    weights = blob_weights((8, 8), 4)
    wrong = blob_weights((24, 24), 4)[None]
    prior_overlap = top_overlap(wrong[0], weights)
    details = explain(weights, wrong, n_iter=30)
    assert prior_overlap == 0
    assert top_overlap(details.attributions[0, 0], weights) > 0.8


def test_uncertainty_is_a_ratio_that_falls_with_queries():
    weights = blob_weights((16, 16), 5)
    # Without focus the queries spread: the uncertainty falls everywhere.
    few = explain(weights, None, n_iter=3, focus=0.0).uncertainty
    many = explain(weights, None, n_iter=30, focus=0.0).uncertainty
    assert float(few.min()) >= 0 and float(few.max()) <= 1
    assert float(many.mean()) < float(few.mean())
    # With the default focus the queries gather on the object: it is the best known part.
    focused = explain(weights, None, n_iter=30).uncertainty[0]
    inside = weights > 0
    assert float(focused[inside].mean()) < float(focused[~inside].mean())


def test_batch_invariance_and_windows_per_step(cnn, shapes_val):
    x = shapes_val[0][:4]
    borex = BOREx(cnn, settings=BORExSettings(surrogate="field", windows_per_step=2))
    together = borex.attribute(x, target=1, n_iter=4, seed=3, return_details=True)
    alone = borex.attribute(x[2:3], target=1, n_iter=4, seed=3)
    torch.testing.assert_close(together.attributions[2:3], alone, rtol=1e-5, atol=1e-7)
    assert together.centres.shape == (4, 8, 2)
    # The two windows of a round are chosen jointly: never the same window twice.
    first = torch.cat([together.centres[:, :2], together.half_sizes[:, :2, :1]], -1)
    assert not torch.equal(first[:, 0], first[:, 1])


def test_clips_get_a_three_dimensional_field(cnn3d, clips_val):
    field = BOREx(cnn3d, settings=BORExSettings(surrogate="field"))
    details = field.attribute(clips_val[0][:2], target=0, n_iter=6, return_details=True)
    assert details.attributions.shape == clips_val[0][:2].shape
    assert details.uncertainty.shape == clips_val[0][:2, 0].shape


def test_cells_cover_the_input_exactly():
    space = window_space((SIDE, SIDE), None, None)
    cells = CellGrid(space.shape, (5, 7), torch.device("cpu"))
    grid = space.grid((3, 3))
    coverage = cells.coverage(space, grid.combos, grid.centres)
    masks = space.masks(grid.combos, grid.centres).to(torch.float64)
    # A window's coverage, weighted by each cell's pixels, counts its pixels.
    per_cell = torch.outer(cells.counts[0], cells.counts[1]).flatten()
    torch.testing.assert_close(coverage @ per_cell, masks.flatten(1).sum(1))
    ones = torch.ones(1, SIDE, SIDE)
    torch.testing.assert_close(cells.pool(ones)[0], per_cell)


def test_refine_field_observes_window_sums_exactly():
    """With a linear objective and no noise to speak of, the field's cell sums match."""
    space = window_space((SIDE, SIDE), None, None)
    cells = CellGrid(space.shape, (8, 8), torch.device("cpu"))
    truth = blob_weights((12, 20), 6)[None].double()
    truth_cells = cells.pool(truth)

    def objective(combos: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        masks = space.masks(combos.reshape(-1), centres.reshape(-1, 2)).to(torch.float64)
        return (masks * truth).flatten(1).sum(1).view(combos.shape)

    settings = FieldSettings(
        n_iter=40,
        cells=(8, 8),
        refit_every=5,
        acquisition_stride=(4, 4),
        smoothing=0.0,
        windows_per_step=1,
        focus=0.0,
    )
    result = refine_field(objective, torch.ones(1, SIDE, SIDE), truth.sum((1, 2)), space, settings)
    estimate = cells.pool(result.map)[0]
    # 40 sums of windows 8 to 22 pixels wide pin down the mass and where it lies.
    assert float(estimate.sum()) == pytest.approx(0.8, abs=0.02)
    assert float(estimate[truth_cells[0] > 0].sum()) > 0.8 * 0.8


def test_windows_only_settings_name_the_surrogate():
    with pytest.raises(ValueError, match="kappa applies to surrogate='windows'"):
        BORExSettings(surrogate="field", kappa=3.0)
    with pytest.raises(ValueError, match="focus applies to surrogate='field'"):
        BORExSettings(focus=1.0)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        BORExSettings(surrogate="gp")
    assert BORExSettings(surrogate="windows", kappa=3.0).kappa == 3.0
