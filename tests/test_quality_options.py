"""Options of the window surrogate measured by benchmarks/quality.py: a fitted prior mean and a
sharp prior in the map. Shapes and behaviour only; the quality numbers live in the benchmark.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import Occlusion, Saliency

from captum_borex import RISE, BOREx, BORExSettings, rank_fusion
from captum_borex.bo.optimizer import fit_prior_coefficients
from captum_borex.metrics import deletion_auc, gaussian_blur

FAST = dict(n_iter=4, seed=0)
PUBLISHED = dict(prior_fit="fixed", map_prior="smoothed", gain=10.0)
IMPROVED = dict(prior_fit="affine", map_prior="sharp", gain=3.0)


WINDOWS = BORExSettings(surrogate="windows")


def borex_with(model, prior=None, **settings):
    """BOREx with the window surrogate's default settings changed by ``settings``."""
    return BOREx(model, prior=prior, settings=WINDOWS.replace(**settings))


def test_fit_prior_coefficients_recovers_offsets_per_size_and_rejects_negative_slopes():
    prior = torch.linspace(-1, 1, 20, dtype=torch.float64).repeat(2, 1)
    combos = torch.arange(20).remainder(2).repeat(2, 1)
    offsets = torch.tensor([0.3, -0.2], dtype=torch.float64)[combos[0]]
    scores = torch.stack([offsets + 2.0 * prior[0], 0.1 - 0.5 * prior[1]])
    power = prior.pow(2).mean(1)
    coef = fit_prior_coefficients(prior, combos, scores, 2, power, strength=1e-6)
    torch.testing.assert_close(coef[0], torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64))
    # A prior pointing the wrong way gets slope 0 and the (shrunk) mean of each size.
    assert coef[1, -1] == 0.0
    for size in (0, 1):
        chosen = combos[1] == size
        expected = scores[1][chosen].sum() / (chosen.sum() + 1e-6)
        torch.testing.assert_close(coef[1, size], expected)


def test_fit_prior_coefficients_stays_published_without_evidence():
    empty = torch.zeros(3, 0, dtype=torch.float64)
    combos = torch.zeros(3, 0, dtype=torch.long)
    coef = fit_prior_coefficients(empty, combos, empty, 4, torch.ones(3, dtype=torch.float64), 1.0)
    torch.testing.assert_close(coef, torch.tensor([[0.0] * 4 + [1.0]] * 3, dtype=torch.float64))


def test_window_defaults_are_the_improved_options_and_published_is_reachable(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    default = BOREx(cnn, prior=Saliency(cnn), settings=WINDOWS).attribute(x, target=y, **FAST)
    improved = borex_with(cnn, Saliency(cnn), **IMPROVED).attribute(x, target=y, **FAST)
    assert torch.equal(default, improved)
    published = borex_with(cnn, Saliency(cnn), **PUBLISHED).attribute(x, target=y, **FAST)
    assert not torch.allclose(default, published)


@pytest.mark.parametrize(
    "options",
    [
        dict(prior_fit="affine"),
        dict(map_prior="sharp"),
        IMPROVED,
        dict(IMPROVED, prior_fit_strength=10.0, windows_per_step=2),
        dict(queries="delete"),
        dict(queries="keep", windows_per_step=2),
        dict(map_from=("both", "delete", "keep"), windows_per_step=2),
    ],
)
def test_options_give_finite_maps_of_the_input_shape(cnn, shapes_val, options):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    details = borex_with(cnn, Saliency(cnn), **options).attribute(
        x, target=y, return_details=True, **FAST
    )
    assert details.attributions.shape == x.shape
    assert torch.isfinite(details.attributions).all()
    assert details.uncertainty.shape == (2, 32, 32) and (details.uncertainty >= 0).all()


def test_sharp_fitted_prior_keeps_a_detailed_prior(cnn, shapes_val):
    """With the improved options a pixel-sharp prior keeps its detail: the refined map is
    far closer to the prior than the published (box-averaged) map is (the GP's own maps:
    without the map check, which may keep the prior's map itself)."""
    images, labels, _ = shapes_val
    x, y = images[:4], labels[:4]
    prior = Saliency(cnn).attribute(x, target=y).sum(1)

    def correlation(maps):
        a = maps[:, 0].flatten(1) - maps[:, 0].flatten(1).mean(1, keepdim=True)
        b = prior.flatten(1) - prior.flatten(1).mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    improved = borex_with(cnn, prior, map_check=None, **IMPROVED)
    published = borex_with(cnn, prior, map_check=None, **PUBLISHED)
    improved = improved.attribute(x, target=y, n_iter=8, seed=0)
    published = published.attribute(x, target=y, n_iter=8, seed=0)
    improved, published = correlation(improved), correlation(published)
    assert (improved > published).all(), (improved, published)
    assert improved.mean() > 0.5


def test_improved_options_keep_batch_invariance_and_seeds(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:4], labels[:4]
    borex = borex_with(cnn, RISE(cnn), **IMPROVED)
    kwargs = dict(n_iter=8, seed=3, prior_kwargs={"n_masks": 20, "seed": 1})
    together = borex.attribute(x, target=y, **kwargs)
    alone = borex.attribute(x[2:3], target=y[2:3], **kwargs)
    torch.testing.assert_close(together[2:3], alone, atol=1e-4, rtol=1e-4)
    again = borex.attribute(x, target=y, **kwargs)
    assert torch.equal(together, again)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(prior_fit="linear"), "prior_fit"),
        (dict(map_prior="blurred"), "map_prior"),
        (dict(prior_fit_strength=0.0), "prior_fit_strength"),
        (dict(queries="insert"), "queries"),
        (dict(gain=0.0), "gain"),
    ],
)
def test_bad_option_values_raise(cnn, options, message):
    with pytest.raises(ValueError, match=message):
        borex_with(cnn, **options)


@pytest.mark.parametrize(
    "queries, keep_baselines, before",
    [("both", None, 2), ("delete", None, 1), ("both", "blur", 2), ("keep", "blur", 2)],
)
def test_queries_cost_and_observe_what_they_say(
    cnn, shapes_val, recording, queries, keep_baselines, before
):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    x_before = x.clone()
    model = recording(cnn)
    borex = borex_with(
        model, queries=queries, keep_baselines=keep_baselines, gain=2.0, map_check=None
    )
    details = borex.attribute(x, target=y, n_iter=5, seed=0, return_details=True)
    assert torch.equal(x, x_before)
    # Calls per input before the windows: the target check, which also scores the input
    # (the reference of "delete"), then the baseline check (not for "delete", which makes
    # no keep queries to warn about), which also scores the keep baseline (the reference of
    # "keep").
    per_window = 2 if queries == "both" else 1
    assert model.seen == 3 * (before + 5 * per_window)
    # Replay the last window of each input: the score is tanh(gain * delta / 2).
    rows, cols = details.centres[:, -1, 0], details.centres[:, -1, 1]
    half = details.half_sizes[:, -1, 0]
    inside = torch.zeros(3, 1, 32, 32, dtype=torch.bool)
    for i in range(3):
        r0, c0, h = int(rows[i] - half[i]), int(cols[i] - half[i]), 2 * int(half[i])
        inside[i, :, max(r0, 0) : r0 + h, max(c0, 0) : c0 + h] = True
    background = gaussian_blur(x) if keep_baselines == "blur" else torch.zeros_like(x)
    with torch.no_grad():

        def p(batch: torch.Tensor) -> torch.Tensor:
            return torch.softmax(cnn(batch), 1)[torch.arange(3), y]

        kept = p(torch.where(inside, x, background))
        if queries == "keep":
            delta = kept - p(background)
        else:
            delta = (kept if queries == "both" else p(x)) - p(torch.where(inside, 0.0, x))
    expected = torch.tanh(2.0 * delta / 2)
    torch.testing.assert_close(details.scores[:, -1], expected, atol=1e-5, rtol=1e-4)


def _mean_ranks(maps: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Each pixel's rank within its image in [0, 1] (ties share their mean), averaged with
    ``weights``."""
    out = []
    for m, weight in zip(maps, weights):
        flat = m[:, 0].flatten(1)
        below = (flat.unsqueeze(1) < flat.unsqueeze(2)).sum(2).double()
        not_above = (flat.unsqueeze(1) <= flat.unsqueeze(2)).sum(2).double()
        ranks = (below + not_above - 1) / 2 / (flat.shape[1] - 1)
        out.append(weight * ranks.view_as(m[:, 0]))
    return torch.stack(out).sum(0) / sum(weights)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of two maps per image."""
    ranks = [rank_fusion([m.flatten(1).double()]) for m in (a, b)]
    return torch.stack([torch.corrcoef(torch.stack([r, s]))[0, 1] for r, s in zip(*ranks)])


@pytest.mark.filterwarnings("ignore:the baseline alone gets probability")
def test_map_from_rebuilds_the_named_evidence_without_changing_the_search(
    cnn, shapes_val, recording
):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    kwargs = dict(target=y, n_iter=5, seed=0, return_details=True)
    model = recording(cnn)

    def run(**settings):
        return borex_with(
            model, Saliency(cnn), keep_baselines="blur", map_check=None, **settings
        ).attribute(x, **kwargs)

    plain = run()
    plain_calls = model.seen
    assert torch.equal(run(map_from="both").attributions, plain.attributions)
    single = {name: run(map_from=name) for name in ("delete", "keep")}
    model.seen = 0
    combined = run(map_from=("both", "delete"))
    # The same windows and observations from the same model calls; only the map differs.
    assert model.seen == plain_calls
    weighted = run(map_from={"both": 1.0, "delete": 3})
    for details in (*single.values(), combined, weighted):
        assert torch.equal(details.centres, plain.centres)
        assert torch.equal(details.scores, plain.scores)
        assert torch.equal(details.uncertainty, plain.uncertainty)
    delete, keep = single["delete"].attributions, single["keep"].attributions
    assert not torch.allclose(delete, plain.attributions)
    assert not torch.allclose(delete, keep)
    # Fused maps rank pixels by their weighted mean rank and carry the first evidence's
    # values, so they keep its units and sign.
    for details, weights in ((combined, [1.0, 1.0]), (weighted, [1.0, 3.0])):
        expected = _mean_ranks([plain.attributions, delete], weights)
        assert (_spearman(details.attributions[:, 0], expected) > 0.999).all()
        torch.testing.assert_close(
            details.attributions[:, 0].flatten(1).sort(1).values,
            plain.attributions[:, 0].flatten(1).sort(1).values,
        )
    assert torch.equal(combined.attributions[:, 0], combined.attributions[:, 2])
    # Each kind of evidence comes back by name; fusing them reweights at no model call.
    assert list(plain.evidence_maps) == ["both"]
    assert torch.equal(plain.evidence_maps["both"], plain.attributions[:, 0])
    assert list(weighted.evidence_maps) == ["both", "delete"]
    assert torch.equal(weighted.evidence_maps["delete"], delete[:, 0])
    refused = rank_fusion(list(combined.evidence_maps.values()), weights=[1, 3])
    assert (_spearman(refused, weighted.attributions[:, 0]) > 0.999).all()


def test_map_from_evidence_tracks_its_own_observations(cnn, shapes_val):
    """A window whose deletion costs more gets a higher delete-evidence map: the map's mean
    over each queried window rises with that window's observed delete evidence (kappa 10
    spreads the windows, so that their evidence varies)."""
    images, labels, _ = shapes_val
    x, y = images[:4], labels[:4]
    details = borex_with(cnn, map_from="delete", kappa=10.0).attribute(
        x, target=y, n_iter=12, seed=0, return_details=True
    )
    with torch.no_grad():
        probability = torch.softmax(cnn(x), 1)[torch.arange(4), y]
    for i in range(4):
        means, observed = [], []
        for (r, c), (h, _) in zip(details.centres[i].tolist(), details.half_sizes[i].tolist()):
            r0, c0 = max(int(r - h), 0), max(int(c - h), 0)
            window = (slice(None), slice(r0, int(r + h)), slice(c0, int(c + h)))
            means.append(details.attributions[i][window].mean())
            deleted = x[i : i + 1].clone()
            deleted[(slice(None), *window)] = 0.0
            with torch.no_grad():
                observed.append(probability[i] - torch.softmax(cnn(deleted), 1)[0, y[i]])
        means, observed = torch.stack(means), torch.stack(observed)
        assert torch.corrcoef(torch.stack([means, observed]))[0, 1] > 0.5


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(map_from="insert"), ValueError, "map_from must be one of"),
        (dict(map_from=("both", "both")), ValueError, "each evidence once"),
        (dict(map_from=()), ValueError, "each evidence once"),
        (dict(map_from=3), TypeError, "map_from must be None, a string, a sequence"),
        (dict(map_from={"delete": 0.0}), ValueError, r"map_from\['delete'\] must be a positive"),
        (dict(map_from={"delete": "2"}), TypeError, r"map_from\['delete'\] must be a number"),
        (dict(map_from={1: 2.0}), TypeError, "map_from must be None"),
        (dict(map_from=("delete", 1)), TypeError, "map_from"),
        (dict(map_from="keep", queries="delete"), ValueError, "needs keep queries"),
        (dict(map_from="both", queries="keep"), ValueError, "needs delete and keep queries"),
    ],
)
def test_bad_map_from_raises(options, error, message):
    with pytest.raises(error, match=message):
        BORExSettings(**options)


@pytest.mark.parametrize("queries", ["both", "delete", "keep"])
def test_internal_batch_size_bounds_every_pass(cnn, shapes_val, recording, queries):
    images, labels, _ = shapes_val
    model = recording(cnn)
    kwargs = dict(target=labels[:5], n_iter=2, seed=0, return_details=True)
    bounded = borex_with(model, queries=queries).attribute(
        images[:5], internal_batch_size=2, **kwargs
    )
    assert model.largest == 2
    whole = borex_with(cnn, queries=queries).attribute(images[:5], **kwargs)
    # The model's scores agree to float rounding, which depends on the batch size on some
    # CPUs; a later round's UCB near-tie may then tip to a neighbouring window, so the maps
    # are compared where every queried window is the same.
    torch.testing.assert_close(bounded.centres[:, 0], whole.centres[:, 0])
    torch.testing.assert_close(bounded.scores[:, 0], whole.scores[:, 0], atol=1e-6, rtol=1e-4)
    same_windows = (bounded.centres == whole.centres).flatten(1).all(1) & (
        bounded.half_sizes == whole.half_sizes
    ).flatten(1).all(1)
    assert same_windows.sum() >= 4
    torch.testing.assert_close(
        bounded.attributions[same_windows], whole.attributions[same_windows], atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize(
    "keep_baselines, error, message",
    [
        ("sharpen", ValueError, "keep_baselines must be one of"),
        (torch.zeros(2, 3, 5, 5), TypeError, "pass a callable returning it"),
        (float("nan"), ValueError, "keep_baselines must be a finite number"),
        ([0.0], TypeError, "keep_baselines"),
    ],
)
def test_bad_keep_baselines_raise(keep_baselines, error, message):
    with pytest.raises(error, match=message):
        BORExSettings(keep_baselines=keep_baselines)


def test_keep_baselines_that_do_not_fit_the_inputs_raise(cnn, shapes_val):
    images, labels, _ = shapes_val
    cases = [
        (lambda x: torch.zeros(2, 3, 5, 5), "keep_baselines gives shape"),
        (lambda x: torch.full_like(x, float("nan")), "keep_baselines"),
    ]
    for keep_baselines, message in cases:
        with pytest.raises(ValueError, match=message):
            borex_with(cnn, keep_baselines=keep_baselines).attribute(
                images[:2], target=labels[:2], **FAST
            )


def test_fitted_prior_does_not_spoil_a_sparse_strong_prior(cnn, shapes_val):
    """A fine Occlusion map is sharp and sparse: normalised by its mean it towers over the
    observations, and the published refinement turns it into a worse-than-random ranking.
    The fitted prior mean keeps it at least as good as it was."""
    images, labels, _ = shapes_val
    x, y = images[:12], labels[:12]

    def probabilities(inp):
        return torch.softmax(cnn(inp), 1)

    occlusion = Occlusion(probabilities).attribute(
        x, target=y, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2)
    )
    prior = occlusion.sum(1)

    def deletion(maps):
        return deletion_auc(cnn, x, maps, target=y, n_steps=32).mean().item()

    improved = BOREx(cnn, prior=prior).attribute(x, target=y, n_iter=20, seed=0)
    published = borex_with(cnn, prior, map_check=None, **PUBLISHED)
    published = published.attribute(x, target=y, n_iter=20, seed=0)
    assert deletion(improved) <= deletion(prior) + 0.02
    assert deletion(published) > deletion(prior) + 0.1


class _DefaultsToClassZero(torch.nn.Module):
    """Class 0 unless the image is bright: a blank baseline is taken for class 0."""

    def forward(self, x):
        brightness = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(brightness), 20 * (brightness - 0.1)], 1)


def test_warns_when_the_baseline_is_taken_for_the_target():
    model = _DefaultsToClassZero()
    x = torch.rand(3, 3, 16, 16)
    on_baselines = borex_with(model, keep_baselines=None)
    with pytest.warns(UserWarning, match="baseline alone gets probability") as record:
        on_baselines.attribute(x, target=0, n_iter=2, seed=0, window_sizes=(2, 3))
    assert [w.filename for w in record] == [__file__]  # the caller's line, not the library's
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        on_baselines.attribute(x, target=1, n_iter=2, seed=0, window_sizes=(2, 3))
        kwargs = dict(target=0, n_iter=2, seed=0, window_sizes=(2, 3), baselines=1.0)
        on_baselines.attribute(x, **kwargs)
        # The default keep queries show windows on a blurred copy, not on the baseline.
        BOREx(model).attribute(x, target=0, n_iter=2, seed=0, window_sizes=(2, 3))


def test_the_baseline_warning_checks_the_keep_baselines():
    model = _DefaultsToClassZero()
    x = torch.rand(3, 3, 16, 16)
    kwargs = dict(target=0, n_iter=2, seed=0, window_sizes=(2, 3), baselines=1.0)
    with pytest.warns(UserWarning, match="only the delete half of each query informs"):
        borex_with(model, keep_baselines=0.0).attribute(x, **kwargs)
    with pytest.warns(UserWarning, match="their maps carry little information"):
        borex_with(model, keep_baselines=0.0, queries="keep").attribute(x, **kwargs)
    # Keep baselines equal to the delete baselines leave no informative half.
    same = dict(kwargs, baselines=0.0)
    with pytest.warns(UserWarning, match="their maps carry little information"):
        borex_with(model, keep_baselines=0.0).attribute(x, **same)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        borex_with(model, keep_baselines="mean").attribute(x, **kwargs)
