"""The BOREx loop on a cost-free objective: what it rebuilds from extra observations."""

import pytest
import torch

from captum_borex import BORExSettings
from captum_borex.attr.borex import optimiser_settings
from captum_borex.bo.optimizer import optimise
from captum_borex.bo.windows import WindowSpace


@pytest.mark.parametrize("prior_fit", ["affine", "fixed"])
def test_extra_observations_are_rebuilt_like_the_objective(prior_fit):
    """An extra observation equal to the objective's gets the same map; a different one gets
    its own map, while the search follows the objective alone."""
    space = WindowSpace((12, 12), [(2, 3)], (0, 0), (1.0, 1.0))
    prior = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0))
    weights = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(1))

    def objective(combos, centres):
        masks = space.masks(combos.reshape(-1), centres.reshape(-1, 2)).view(2, -1, 12, 12)
        y = (masks * weights.unsqueeze(1)).mean((2, 3)).double()
        return y, torch.stack([y, -y], -1)

    settings = optimiser_settings(
        BORExSettings(surrogate="windows", prior_fit=prior_fit), space, n_iter=6
    )
    result = optimise(objective, prior, space, settings, torch.Generator().manual_seed(2))
    plain = optimise(
        lambda c, x: objective(c, x)[0], prior, space, settings, torch.Generator().manual_seed(2)
    )
    assert plain.extra_maps is None
    assert torch.equal(result.centres, plain.centres)
    torch.testing.assert_close(result.mean_map, plain.mean_map)
    assert result.extra_maps.shape == (2, 2, 12, 12)
    torch.testing.assert_close(result.extra_maps[:, 0], plain.mean_map)
    assert not torch.allclose(result.extra_maps[:, 1], plain.mean_map)
