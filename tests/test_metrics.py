import pytest
import torch
from torch import nn

from captum_borex.metrics import (
    causal_curves,
    deletion_auc,
    energy_pointing_game,
    gaussian_blur,
    insertion_auc,
    pointing_game,
)


class RegionModel(nn.Module):
    """Class 0's logit is 20 x (mean of a 4x4 region) - 10: only that region matters."""

    def forward(self, x):
        region = x[:, :, 2:6, 2:6].mean(dim=(1, 2, 3))
        logit = 20 * region - 10
        return torch.stack([logit, -logit], 1)


def region_maps():
    good = torch.zeros(2, 1, 12, 12)
    good[:, :, 2:6, 2:6] = 1.0
    good += torch.linspace(0, 0.01, 144).view(1, 1, 12, 12)
    return good, -good


def test_faithful_map_wins_deletion_and_insertion():
    x = torch.ones(2, 3, 12, 12)
    good, bad = region_maps()
    model = RegionModel()
    d_good, d_bad = deletion_auc(model, x, good, target=0), deletion_auc(model, x, bad, target=0)
    i_good = insertion_auc(model, x, good, target=0, substrate="zeros")
    i_bad = insertion_auc(model, x, bad, target=0, substrate="zeros")
    assert d_good.shape == (2,) and ((d_good >= 0) & (d_good <= 1)).all()
    assert (d_good < d_bad - 0.5).all()
    assert (i_good > i_bad + 0.5).all()


def test_curves_have_the_right_ends_and_shapes():
    x = torch.ones(1, 3, 12, 12)
    good, _ = region_maps()
    curves = causal_curves(
        "deletion", RegionModel(), x, good[:1], target=0, n_steps=9, internal_batch_size=3
    )
    assert curves.scores.shape == (1, 10) and curves.fractions[0] == 0 and curves.fractions[-1] == 1
    assert curves.scores[0, 0] > 0.99 and curves.scores[0, -1] < 0.01
    torch.testing.assert_close(
        curves.auc.double(), torch.trapezoid(curves.scores.double(), curves.fractions, dim=1)
    )


def test_substrates():
    x = torch.rand(2, 3, 12, 12)
    good, _ = region_maps()
    model = RegionModel()
    for substrate in ["zeros", "blur", "mean", 0.5, torch.zeros(1, 3, 1, 1), lambda t: t * 0]:
        out = deletion_auc(model, x, good, target=0, substrate=substrate, n_steps=5)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="substrate must be one of"):
        deletion_auc(model, x, good, target=0, substrate="noise")
    blurred = gaussian_blur(torch.ones(1, 1, 9, 9))
    torch.testing.assert_close(blurred, torch.ones(1, 1, 9, 9))


def test_attribution_shape_mismatch_is_a_value_error():
    x = torch.rand(2, 3, 12, 12)
    with pytest.raises(ValueError, match="attributions has shape"):
        deletion_auc(RegionModel(), x, torch.rand(2, 3, 10, 10), target=0)


def test_pointing_game_inside_outside_and_tolerance():
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    maps = torch.zeros(2, 10, 10)
    maps[0, 3, 3] = 1.0
    maps[1, 3, 7] = 1.0
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=4).tolist() == [True, True]
    assert pointing_game(maps[:, None].expand(-1, 3, -1, -1), masks, tolerance=3).tolist() == [
        True,
        False,
    ]


def test_energy_pointing_game_sums():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    maps = torch.tensor([[[1.0, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [-5, -5, -5, -5]]])
    torch.testing.assert_close(energy_pointing_game(maps, masks), torch.tensor([8.0 / 16.0]))
    assert energy_pointing_game(-maps.abs(), masks).item() == 0.0
    with pytest.raises(ValueError, match="masks of shape"):
        energy_pointing_game(maps, torch.zeros(1, 5, 5, dtype=torch.bool))
