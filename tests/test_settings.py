"""One way to call BOREx: the settings type, its presets, the published preset against the
published reference loop, and what the map's sign means to Captum's visualisation."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam, Saliency

from captum_borex import PRESETS, BOREx, BORExSettings
from captum_borex.attr._objective import WindowObjective
from captum_borex.attr._priors import normalise_prior
from captum_borex.metrics import deletion_auc, insertion_auc

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _models import BoxScorer  # noqa: E402
from map_sign import brightest_rank  # noqa: E402
from reference_borex import published_borex  # noqa: E402


def test_attribute_keeps_per_call_arguments_only():
    parameters = inspect.signature(BOREx.attribute).parameters
    assert len(parameters) <= 12
    assert not set(parameters) & {f for f in BORExSettings.__dataclass_fields__}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_runs(cnn, shapes_val, name):
    images, labels, _ = shapes_val
    borex = BOREx(cnn, prior=Saliency(cnn), settings=name)
    assert borex.settings is PRESETS[name] and BORExSettings.preset(name) is PRESETS[name]
    details = borex.attribute(images[:2], target=labels[:2], n_iter=3, seed=0, return_details=True)
    assert details.attributions.shape == images[:2].shape
    assert torch.isfinite(details.attributions).all()
    assert details.settings is PRESETS[name]


def test_published_preset_is_the_papers_loop():
    published = BORExSettings.preset("published")
    assert published.changes() == {
        "keep_baselines": None,
        "gain": 10.0,
        "prior_fit": "fixed",
        "kappa": 10.0,
        "map_prior": "smoothed",
        "acquisition_stride": 1,
        "refit_every": 1,
        "warm_start": False,
        "exact_map": True,
        "map_check": None,
    }


def test_replace_validates_and_names_the_settings():
    settings = BORExSettings(surrogate="windows").replace(kappa=5, lengthscale=[10, 10, 8])
    assert settings.kappa == 5.0 and settings.lengthscale == (10.0, 10.0, 8.0)
    assert BORExSettings() == BORExSettings.preset("default")
    with pytest.raises(TypeError, match="unknown BOREx setting.*'kapa'.*the settings are.*kappa"):
        settings.replace(kapa=1.0)
    with pytest.raises(ValueError, match="unknown BOREx preset 'fast'.*'default', 'published'"):
        BOREx(lambda x: x, settings="fast")
    with pytest.raises(TypeError, match="settings must be a preset name"):
        BOREx(lambda x: x, settings={"kappa": 1.0})
    with pytest.raises(AttributeError):
        settings.kappa = 1.0  # frozen


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(kappa=-1.0), ValueError, "kappa"),
        (dict(noise=0.0), ValueError, "noise"),
        (dict(prior_scale=float("inf")), ValueError, "prior_scale"),
        (dict(lengthscale=(1.0, 0.0, 1.0)), ValueError, "lengthscale"),
        (dict(lengthscale="12"), TypeError, "lengthscale"),
        (dict(lengthscale_bounds=(5.0, 1.0)), ValueError, "lengthscale_bounds"),
        (dict(jitter=(1.0, -1.0, 0.5)), ValueError, "jitter"),
        (dict(acquisition_stride=0), ValueError, "acquisition_stride"),
        (dict(refit_every=0), ValueError, "refit_every"),
        (dict(windows_per_step=1.5), TypeError, "windows_per_step"),
        (dict(warm_start="yes"), TypeError, "warm_start"),
        (dict(prior_mean="corner"), ValueError, "prior_mean must be one of"),
        (dict(prior_reduction="median"), ValueError, "prior_reduction"),
        (dict(apply_softmax=1), TypeError, "apply_softmax"),
    ],
)
def test_bad_settings_raise_naming_the_setting(changes, error, message):
    with pytest.raises(error, match=message):
        BORExSettings(**changes)


def test_settings_that_do_not_fit_the_inputs_raise(cnn, shapes_val):
    images, labels, _ = shapes_val
    clip_scales = BORExSettings(surrogate="windows", lengthscale=(12.0,) * 5)
    with pytest.raises(ValueError, match=r"settings.lengthscale needs 3 values \(rows, columns"):
        BOREx(cnn, settings=clip_scales).attribute(images[:1], target=labels[:1], n_iter=2)


@pytest.mark.parametrize("sign", ["positive", "absolute_value"])
def test_captum_visualisation_shows_what_borex_ranks_first(cnn, shapes_val, sign):
    """Positive is evidence for the target: Captum's heat map, with sign="positive" and with
    its default "absolute_value", is brightest where BOREx's map ranks highest."""
    images, labels, _ = shapes_val
    x, y = images[:6], labels[:6]
    maps = BOREx(cnn, prior=LayerGradCam(cnn, cnn.features[-1])).attribute(
        x, target=y, n_iter=20, seed=0
    )
    for attributions, image in zip(maps, x):
        assert brightest_rank(attributions, image, sign) >= 0.95
        assert attributions.max() > 0


def test_map_is_a_change_of_probability_comparable_across_images(cnn, shapes_val):
    """The map's unit is the target's probability: values lie within [-1, 1], the region
    that holds the class is positive and irrelevant background is near zero."""
    images, labels, masks = shapes_val
    x, y, m = images[:8], labels[:8], masks[:8]
    maps = BOREx(cnn).attribute(x, target=y, n_iter=25, seed=0)[:, 0]
    assert maps.abs().max() <= 1.0
    inside = torch.stack([v[k.bool()].mean() for v, k in zip(maps, m)])
    outside = torch.stack([v[~k.bool()].mean() for v, k in zip(maps, m)])
    assert (inside > outside).float().mean() >= 0.75
    assert (inside > 0).float().mean() >= 0.75


SIZE, HALF_SIZES, ROUNDS, SEEDS = 224, (30, 45, 60, 75), 8, (0, 1)


def _reference_maps(model: BoxScorer, images: torch.Tensor, prior: torch.Tensor, seed: int):
    """The published loop, one image at a time (benchmarks/reference_borex.py)."""
    out = []
    for image, p in zip(images, prior):

        def score(r: int, c: int, s: int, image: torch.Tensor = image) -> float:
            inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            inside[max(r - s, 0) : r + s, max(c - s, 0) : c + s] = True
            with torch.no_grad():
                probability = torch.softmax(
                    model(torch.stack([image * inside, image * ~inside])), 1
                )
            return float(np.tanh(10 * float(probability[0, 0] - probability[1, 0]) / 2))

        maps = published_borex(score, p.double().numpy(), HALF_SIZES, n_iter=ROUNDS, seed=seed)
        out.append(torch.from_numpy(maps))
    return torch.stack(out).float()


def test_published_preset_reproduces_the_published_reference_loop():
    """Deletion and insertion of the published preset's maps match the reference loop's
    within the reference's own spread over seeds."""
    torch.manual_seed(0)
    model = BoxScorer((60, 120, 100, 160)).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    target = torch.zeros(2, dtype=torch.long)
    prior = torch.rand(2, SIZE, SIZE)
    borex = BOREx(model, prior=prior, settings="published")

    def measures(maps: torch.Tensor) -> torch.Tensor:
        deletion = deletion_auc(model, images, maps, target=target, n_steps=20)
        insertion = insertion_auc(model, images, maps, target=target, n_steps=20)
        return torch.stack([deletion.mean(), insertion.mean()])

    ours = torch.stack(
        [
            measures(borex.attribute(images, target=0, n_iter=ROUNDS, seed=seed)[:, 0])
            for seed in SEEDS
        ]
    )
    normalised = normalise_prior(prior, BORExSettings.preset("published").prior_scale)
    reference = torch.stack(
        [measures(_reference_maps(model, images, normalised, seed)) for seed in SEEDS]
    )
    spread = reference.std(0) + ours.std(0)
    assert ((ours.mean(0) - reference.mean(0)).abs() <= 2 * spread + 0.02).all(), (
        ours,
        reference,
    )


def test_probability_units_stay_within_a_probability_change_where_the_gp_overshoots():
    """The GP's mean may pass tanh's range; a change of probability stays in [-1, 1]."""
    objective = WindowObjective.__new__(WindowObjective)  # only the conversion is tested
    objective.gain, objective.apply_softmax = 3.0, True
    objective.input_scores, objective.keep_scores = torch.tensor([0.9]), torch.tensor([0.1])
    overshoot = torch.tensor([1.4, 1.2, 0.999, 1.0], dtype=torch.float64).view(1, 4, 1, 1)
    deleted = objective.probability_change("delete", overshoot)
    torch.testing.assert_close(deleted, torch.ones(1, 1, 1, dtype=torch.float64))
    both = objective.probability_change("both", -overshoot)
    torch.testing.assert_close(both, torch.full((1, 1, 1), (-1.0 + 0.8) / 2, dtype=torch.float64))
