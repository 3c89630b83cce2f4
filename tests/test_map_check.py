"""The map check: each input's map is the candidate whose top best separates the target."""

from __future__ import annotations

import pytest
import torch

from captum_borex import BOREx, BORExDetails, BORExSettings
from captum_borex._substrates import gaussian_blur
from captum_borex.attr._map_check import checked_map, top_masks
from captum_borex.attr._objective import WindowObjective
from captum_borex.attr._window_args import window_space
from captum_borex.bo.windows import box_smooth


def test_top_masks_mark_the_highest_pixels_with_ties_broken_by_position():
    maps = torch.tensor([[[3.0, 1.0], [2.0, 2.0]]])
    masks = top_masks(maps, (0.25, 0.5, 0.75))
    assert masks.shape == (3, 1, 1, 2, 2)
    expected = [
        [[True, False], [False, False]],
        [[True, False], [True, False]],
        [[True, False], [True, True]],
    ]
    assert masks[:, 0, 0].tolist() == expected


class RegionModel(torch.nn.Module):
    """Two classes; class 0's logit grows with the mean brightness of the top-left quarter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = 20 * x[:, :, :8, :8].mean((1, 2, 3)) - 10
        return torch.stack([evidence, torch.zeros_like(evidence)], 1)


def test_the_check_picks_the_map_whose_top_holds_the_evidence():
    x = torch.ones(2, 1, 16, 16)
    zeros = torch.zeros_like(x)
    objective = WindowObjective(
        RegionModel(), x, zeros, zeros, 0, None, window_space((16, 16), None, None), 3.0, True, None
    )
    region = torch.zeros(2, 16, 16)
    region[:, :8, :8] = 1.0
    # The right map for the first input comes second, for the second first.
    right, wrong = region + 0.01 * torch.rand(2, 16, 16), 1 - region
    first = torch.stack([wrong[0], right[1]])
    second = torch.stack([right[0], wrong[1]])
    chosen, checks = checked_map(objective, {"a": first, "b": second}, (0.25, 0.5), (0.25,))
    assert torch.equal(chosen, right)
    assert list(checks) == ["a", "b"]
    assert checks["b"][0] > checks["a"][0] and checks["a"][1] > checks["b"][1]
    # The top quarter is exactly the region: shown alone it keeps the class, deleted it goes.
    assert checks["b"][0] > 0.99


@pytest.mark.parametrize("with_prior", [False, True])
def test_default_map_is_the_checked_candidate_at_the_counted_cost(
    cnn, shapes_val, recording, with_prior
):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    x_before = x.clone()
    model = recording(cnn)
    settings = BORExSettings()
    # A prior tensor: the prior's own map is one more candidate, at no model call of its own.
    prior = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    borex = BOREx(model, prior if with_prior else None)
    names = ("both", "delete", "keep", "prior")[: 4 if with_prior else 3]
    assert settings.check_candidates(prior=with_prior) == names
    details = borex.attribute(x, target=y, n_iter=4, seed=0, return_details=True)
    assert torch.equal(x, x_before)
    assert tuple(details.map_checks) == names
    assert model.seen == 3 * borex.calls_per_input(4)
    # Each candidate's top deleted and shown alone at 10% and 50%.
    assert settings.check_fractions == ((0.1, 0.5), (0.1, 0.5))
    assert borex.calls_per_input(4) == 2 + 4 * 2 + len(names) * (2 + 2)
    if with_prior:
        # The prior's map is the prior box-averaged over 5 x 5 pixels (half the smallest
        # window), in the evidence's units.
        prior_map = details.evidence_maps["prior"]
        smoothed = box_smooth(prior, (2, 2))
        torch.testing.assert_close(
            prior_map / prior_map.mean((1, 2), keepdim=True),
            smoothed / smoothed.mean((1, 2), keepdim=True),
        )
        torch.testing.assert_close(
            prior_map.abs().mean((1, 2)), details.evidence_maps["both"].abs().mean((1, 2))
        )
    _assert_checks_replay(cnn, x, y, details, *settings.check_fractions)
    best = torch.stack(list(details.map_checks.values())).argmax(0)
    candidates = torch.stack(list(details.evidence_maps.values()))
    assert torch.equal(details.attributions[:, 0], candidates[best, torch.arange(3)])


def _assert_checks_replay(
    cnn: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    details: BORExDetails,
    deleted_at: tuple[float, ...],
    shown_at: tuple[float, ...],
) -> None:
    """Each candidate's check, replayed by hand: the mean s(top shown on the blur) at
    ``shown_at`` minus the mean s(top deleted onto zeros) at ``deleted_at``."""
    blur = gaussian_blur(x)

    def p(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(cnn(batch), 1)[torch.arange(len(x)), y]

    with torch.no_grad():
        for name, evidence in details.evidence_maps.items():
            shown = [p(torch.where(m, x, blur)) for m in top_masks(evidence, shown_at)]
            deleted = [p(torch.where(m, 0.0, x)) for m in top_masks(evidence, deleted_at)]
            expected = torch.stack(shown).mean(0) - torch.stack(deleted).mean(0)
            torch.testing.assert_close(details.map_checks[name], expected, atol=1e-5, rtol=1e-4)


def test_nothing_is_checked_with_one_map_or_the_field():
    for settings, calls in (
        (BORExSettings(map_check=None), 2 + 3 * 2),
        (BORExSettings(queries="delete"), 1 + 3),
        (BORExSettings(map_from="both"), 2 + 3 * 2),
        (BORExSettings(surrogate="field"), 2 + 3 * 2),
        (BORExSettings.preset("published"), 2 + 3 * 2),
    ):
        assert settings.check_candidates() == ()
        assert settings.calls_per_input(3) == settings.calls_per_input(3, prior=False) == calls
    two = BORExSettings(map_from=("delete", "keep"), map_check=(0.5,))
    assert two.check_candidates() == ("delete", "keep")
    assert two.check_fractions == ((0.5,), (0.5,))
    assert two.calls_per_input(3) == 2 + 3 * 2 + 2 * 2
    assert BORExSettings(map_check=None).check_fractions == ((), ())


def test_the_prior_map_needs_a_prior_and_evidence_beside_it(cnn):
    with pytest.raises(ValueError, match="names only the prior"):
        BORExSettings(map_from="prior")
    with pytest.raises(ValueError, match="no prior"):
        BOREx(cnn, None, BORExSettings(map_from=("both", "prior")))
    # The default names the prior too, and leaves it out where there is none.
    assert "prior" in BORExSettings().map_sources
    assert "prior" not in BORExSettings().sources(prior=False)
    assert BOREx(cnn).calls_per_input(3) == BORExSettings().calls_per_input(3, prior=False)
    with pytest.raises(TypeError, match="prior must be True or False"):
        BORExSettings().calls_per_input(3, prior=None)


def test_the_prior_map_fuses_by_rank_without_a_check(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    prior = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1))
    settings = BORExSettings(map_from={"both": 1.0, "prior": 3.0}, map_check=None)
    details = BOREx(cnn, prior, settings).attribute(
        x, target=y, n_iter=3, seed=0, return_details=True
    )
    assert set(details.evidence_maps) == {"both", "prior"} and not details.map_checks
    assert BOREx(cnn, prior, settings).calls_per_input(3) == 2 + 3 * 2


@pytest.mark.parametrize(
    "value, error",
    [
        ((0.0, 0.5), ValueError),
        ((1.0,), ValueError),
        ((), TypeError),
        ("0.5", TypeError),
        (0.5, TypeError),
    ],
)
@pytest.mark.parametrize("name", ["map_check", "map_check_shown"])
def test_bad_map_check_is_refused_by_name(value, error, name):
    with pytest.raises(error, match=name):
        BORExSettings(**{name: value})


def test_weights_without_fusion_are_refused():
    with pytest.raises(ValueError, match="map_check=None"):
        BORExSettings(map_from={"both": 1.0, "delete": 3.0})
    assert BORExSettings(map_from={"both": 1.0, "delete": 3.0}, map_check=None).map_check is None


def test_map_check_fractions_are_sorted_once():
    assert BORExSettings(map_check=[0.75, 0.25, 0.75]).map_check == (0.25, 0.75)
    assert BORExSettings(map_check_shown=[0.9, 0.3, 0.9]).map_check_shown == (0.3, 0.9)


@pytest.mark.parametrize(
    "deleted_at, shown_at, calls",
    [
        ((0.1, 0.5), (0.5, 0.75), 2 + 3 * 2 + 3 * (2 + 2)),
        ((0.1, 0.5), (0.5,), 2 + 3 * 2 + 3 * (2 + 1)),
        ((0.5,), (0.25, 0.5, 0.75), 2 + 3 * 2 + 3 * (1 + 3)),
    ],
)
def test_the_check_shows_the_tops_at_their_own_fractions(
    cnn, shapes_val, recording, deleted_at, shown_at, calls
):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    settings = BORExSettings(map_check=deleted_at, map_check_shown=shown_at)
    assert settings.check_fractions == (deleted_at, shown_at)
    assert settings.calls_per_input(3, prior=False) == calls
    model = recording(cnn)
    details = BOREx(model, None, settings).attribute(
        x, target=y, n_iter=3, seed=0, return_details=True
    )
    assert model.seen == 2 * calls
    _assert_checks_replay(cnn, x, y, details, deleted_at, shown_at)


def test_map_check_shown_is_windows_only():
    with pytest.raises(ValueError, match="map_check_shown.*windows"):
        BORExSettings(surrogate="field", map_check_shown=(0.5,))


@pytest.mark.parametrize("smoothing, support", [(0.5, 5 * 5), (0.0, 1)])
def test_the_prior_candidate_is_box_averaged_over_half_the_smallest_window(
    cnn, shapes_val, smoothing, support
):
    """On 32-px inputs the smallest window's half-size is 4, so by default a one-pixel prior
    becomes a 5 x 5 box of equal values in the check; 0 keeps it as given. The prior the
    search uses is the prior as given either way."""
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    assert window_space((32, 32), None, None).combos[0].tolist() == [4, 4]
    prior = torch.zeros(2, 32, 32)
    prior[:, 16, 10] = 1.0
    settings = BORExSettings(prior_map_smoothing=smoothing)
    details = BOREx(cnn, prior, settings).attribute(
        x, target=y, n_iter=2, seed=0, return_details=True
    )
    candidate = details.evidence_maps["prior"]
    for one in candidate:
        nonzero = one.nonzero()
        assert len(nonzero) == support
        assert torch.allclose(one[one != 0], one[one != 0][0].expand(support))
        assert nonzero.float().mean(0).tolist() == [16.0, 10.0]
    assert (details.prior != 0).sum().item() == 2


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(prior_map_smoothing=-0.5), ValueError, "prior_map_smoothing"),
        (dict(prior_map_smoothing="0.5"), TypeError, "prior_map_smoothing"),
        (dict(surrogate="field", prior_map_smoothing=0.0), ValueError, "windows"),
    ],
)
def test_bad_prior_map_smoothing_raises(options, error, message):
    with pytest.raises(error, match=message):
        BORExSettings(**options)
