"""The five "Explain To Me" salience measures and the map similarities behind them."""

import math

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from scipy import stats
from torch import nn

from captum_borex._substrates import gaussian_blur
from captum_borex.metrics.salience import (
    cross_model_stability,
    guided_blur,
    guided_degradation,
    map_spearman,
    map_ssim,
    out_of_set_shift,
    salience_entropy,
    salt_and_pepper,
    transform_consistency,
)


class RegionModel(nn.Module):
    """Class 0's logit is 20 x (mean of rows/cols 2:6) - 10: only that region matters."""

    def forward(self, x):
        region = x[..., 2:6, 2:6].flatten(1).mean(1)
        logit = 20 * region - 10
        return torch.stack([logit, -logit], 1)


class LinearModel(nn.Module):
    """Two classes scored by fixed random pixel weights (differentiable, for Saliency)."""

    def __init__(self, seed=0, size=16):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(2, 3 * size * size, generator=gen))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class InputAsMap:
    """An exactly equivariant 'attribution method': the map is the input itself."""

    def attribute(self, inputs, target=None, **kwargs):
        return inputs


class FixedMap:
    """A method that ignores the input: a left-to-right ramp."""

    def attribute(self, inputs, target=None, **kwargs):
        width = inputs.shape[-1]
        ramp = torch.arange(width, dtype=inputs.dtype).expand(inputs.shape[-2], -1)
        return ramp.expand(inputs.shape[0], 1, *ramp.shape)


def images(n=3, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- similarities ----------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (4, 9, 9), generator=gen).float()
    b = torch.randn(4, 9, 9, generator=gen) + a
    ours = map_spearman(a, b)
    theirs = [stats.spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5)
    assert map_spearman(a, -a).tolist() == pytest.approx([-1.0] * 4)


def test_spearman_of_constant_maps():
    flat, varied = torch.ones(1, 8, 8), torch.rand(1, 8, 8)
    assert map_spearman(flat, 2 * flat).item() == 1.0
    assert map_spearman(flat, varied).item() == 0.0


def test_ssim_is_one_for_rescaled_maps_and_lower_otherwise():
    a = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(map_ssim(a, a), torch.ones(3))
    torch.testing.assert_close(map_ssim(a, 5 * a + 2), torch.ones(3))
    assert (map_ssim(a, a.flip(-1)) < 0.5).all()
    clips = torch.rand(2, 1, 3, 16, 16)
    torch.testing.assert_close(map_ssim(clips, clips), torch.ones(2))


def test_similarity_errors():
    with pytest.raises(ValueError, match="must have the same shape"):
        map_ssim(torch.rand(2, 16, 16), torch.rand(2, 16, 12))
    with pytest.raises(ValueError, match="too small for an SSIM window"):
        map_ssim(torch.rand(2, 5, 5), torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="maps_a must be"):
        map_spearman(torch.rand(2, 16), torch.rand(2, 16))
    with pytest.raises(TypeError, match="maps_b must be a tensor"):
        map_spearman(torch.rand(2, 4, 4), [[1.0]])


# --- 1. entropy ------------------------------------------------------------------------


def test_entropy_of_constant_and_one_hot_maps():
    flat = salience_entropy(torch.full((2, 1, 8, 8), 3.0))
    torch.testing.assert_close(flat.entropy, torch.full((2,), 6.0, dtype=torch.float64))
    torch.testing.assert_close(flat.ratio, torch.ones(2, dtype=torch.float64))
    one_hot = torch.zeros(2, 8, 8)
    one_hot[:, 3, 5] = 7.0
    result = salience_entropy(one_hot)
    assert result.entropy.tolist() == [0.0, 0.0] and result.ratio.tolist() == [0.0, 0.0]
    two_hot = one_hot.clone()
    two_hot[:, 0, 0] = -7.0  # absolute values by default: two equal masses = 1 bit
    assert salience_entropy(two_hot).entropy.tolist() == pytest.approx([1.0, 1.0])
    assert salience_entropy(two_hot, absolute=False).entropy.tolist() == [0.0, 0.0]
    assert salience_entropy(torch.zeros(1, 4, 4)).ratio.item() == 1.0


def test_histogram_entropy_counts_values_not_places():
    assert salience_entropy(torch.ones(1, 8, 8), "histogram").entropy.item() == 0.0
    four_values = torch.arange(4.0).repeat_interleave(4).view(1, 4, 4)  # 4 values x 4 pixels
    result = salience_entropy(four_values, "histogram", bins=4)
    assert result.entropy.item() == pytest.approx(2.0)
    assert result.ratio.item() == pytest.approx(1.0)
    shuffled = four_values.flatten()[torch.randperm(16)].view(1, 4, 4)
    assert salience_entropy(shuffled, "histogram", bins=4).entropy.item() == pytest.approx(2.0)
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 0, 0] = 1
    p = 1 / 64
    expected = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert salience_entropy(one_hot, "histogram").entropy.item() == pytest.approx(expected)
    assert salience_entropy(one_hot, "histogram").max_entropy.item() == pytest.approx(6.0)


def test_entropy_layouts_and_clips():
    maps = torch.rand(2, 8, 8)
    base = salience_entropy(maps).entropy
    channel_maps = maps[:, None].expand(-1, 3, -1, -1) / 3
    torch.testing.assert_close(salience_entropy(channel_maps).entropy, base)
    clip = salience_entropy(torch.ones(2, 1, 4, 8, 8))
    torch.testing.assert_close(clip.max_entropy, torch.full((2,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(clip.ratio, torch.ones(2, dtype=torch.float64))


def test_entropy_errors():
    with pytest.raises(ValueError, match="definition must be one of"):
        salience_entropy(torch.rand(1, 4, 4), definition="spectral")
    with pytest.raises(ValueError, match="bins must be >= 2"):
        salience_entropy(torch.rand(1, 4, 4), "histogram", bins=1)
    with pytest.raises(ValueError, match="attributions must be"):
        salience_entropy(torch.rand(4, 4))
    with pytest.raises(TypeError, match="attributions must be a tensor"):
        salience_entropy([[1.0, 2.0]])
    with pytest.raises(ValueError, match="channel_reduction"):
        salience_entropy(torch.rand(1, 3, 4, 4), channel_reduction="median")


# --- 2. out-of-set shift ---------------------------------------------------------------


def test_salt_and_pepper_replaces_the_asked_share_of_pixels():
    x = 0.25 + 0.5 * torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    noisy = salt_and_pepper(x, 0.3, generator=torch.Generator().manual_seed(1))
    low = x.amin((1, 2, 3)).view(-1, 1, 1, 1)
    high = x.amax((1, 2, 3)).view(-1, 1, 1, 1)
    salt, pepper = (noisy == high).all(1), (noisy == low).all(1)  # all channels together
    hit = salt | pepper
    assert abs(hit.float().mean().item() - 0.3) < 0.02
    assert abs(salt.float().sum().item() / hit.sum().item() - 0.5) < 0.05
    untouched = ~hit[:, None].expand_as(x)
    assert torch.equal(noisy[untouched], x[untouched])
    torch.testing.assert_close(salt_and_pepper(x, 0.0), x)
    again = salt_and_pepper(x, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, noisy)
    with pytest.raises(ValueError, match="amount must be in"):
        salt_and_pepper(x, 1.5)


def test_out_of_set_shift_is_zero_without_corruption_and_grows_with_it():
    x = images(4)
    result = out_of_set_shift(RegionModel(), InputAsMap(), x, target=0, amounts=(0.0, 0.1, 0.4))
    assert result.ssim.shape == (3, 4) and result.corrupted_scores.shape == (3, 4)
    torch.testing.assert_close(result.ssim[0], torch.ones(4))
    torch.testing.assert_close(result.spearman[0], torch.ones(4))
    assert (result.score_change[0] == 0).all()
    mean = result.spearman.mean(1)
    assert mean[0] > mean[1] > mean[2]
    assert (result.ssim[2] < 0.9).all()
    torch.testing.assert_close(result.score_change, result.corrupted_scores - result.scores)


def test_out_of_set_shift_with_a_user_transform():
    x = images(2)
    model = RegionModel()
    result = out_of_set_shift(
        model, InputAsMap(), x, target=0, amounts=[0.05], corruption=lambda t, a: t + a
    )
    # Adding a constant leaves the rank order and the min-max normalised map unchanged.
    torch.testing.assert_close(result.spearman, torch.ones(1, 2))
    torch.testing.assert_close(result.ssim, torch.ones(1, 2))
    expected = torch.softmax(model(x + 0.05), 1)[:, 0] - torch.softmax(model(x), 1)[:, 0]
    torch.testing.assert_close(result.score_change[0], expected)


def test_out_of_set_shift_errors():
    x = images(2)
    with pytest.raises(ValueError, match="corruption must return"):
        out_of_set_shift(RegionModel(), InputAsMap(), x, 0, corruption=lambda t, a: t[:, :1])
    with pytest.raises(ValueError, match="corruption must be one of"):
        out_of_set_shift(RegionModel(), InputAsMap(), x, 0, corruption="gaussian")
    with pytest.raises(ValueError, match="amounts must be"):
        out_of_set_shift(RegionModel(), InputAsMap(), x, 0, amounts=[])
    with pytest.raises(TypeError, match="attribution_method must have"):
        out_of_set_shift(RegionModel(), object(), x, 0)
    with pytest.raises(TypeError, match="attribute_kwargs must be a dict"):
        out_of_set_shift(RegionModel(), InputAsMap(), x, 0, attribute_kwargs=[1])


# --- 3. transform consistency ----------------------------------------------------------


def test_equivariant_method_scores_one_for_every_transform():
    result = transform_consistency(RegionModel(), InputAsMap(), images(3), target=0)
    assert set(result.ssim) == {"hflip", "vflip", "rot90", "rot180", "rot270", "shift"}
    for name in result.ssim:
        torch.testing.assert_close(result.ssim[name], torch.ones(3), msg=name)
        torch.testing.assert_close(result.spearman[name], torch.ones(3), msg=name)
    clips = torch.rand(2, 3, 4, 16, 16)
    for values in transform_consistency(RegionModel(), InputAsMap(), clips, 0).spearman.values():
        torch.testing.assert_close(values, torch.ones(2))
    custom = transform_consistency(
        RegionModel(), InputAsMap(), images(2), 0, transforms={"transpose": lambda t: t.mT}
    )
    torch.testing.assert_close(custom.spearman["transpose"], torch.ones(2))


def test_a_map_that_ignores_the_input_is_not_equivariant():
    x = images(2)
    result = transform_consistency(
        RegionModel(), FixedMap(), x, 0, transforms=("hflip", "vflip", "rot180", "shift")
    )
    torch.testing.assert_close(result.spearman["hflip"], -torch.ones(2))
    torch.testing.assert_close(result.spearman["vflip"], torch.ones(2))  # ramp runs across
    torch.testing.assert_close(result.spearman["rot180"], -torch.ones(2))
    torch.testing.assert_close(result.spearman["shift"], torch.ones(2))  # same ramp on overlap
    assert (result.ssim["hflip"] < 0).all()


def test_transform_consistency_leaves_the_model_untouched():
    model = LinearModel()
    model.train()

    class Meddler:
        def attribute(self, inputs, target=None):
            model.eval()
            model.register_forward_hook(lambda *args: None)
            model.weight.requires_grad_(False)
            return inputs

    transform_consistency(model, Meddler(), images(2), 0, transforms=["hflip"])
    assert model.training and model.weight.requires_grad
    assert len(model._forward_hooks) == 0


def test_transform_errors():
    x = images(2)
    with pytest.raises(ValueError, match="transforms must be one of"):
        transform_consistency(RegionModel(), InputAsMap(), x, 0, transforms=["shear"])
    with pytest.raises(ValueError, match="shift .* must be smaller"):
        transform_consistency(RegionModel(), InputAsMap(), x, 0, shift=(16, 0))
    with pytest.raises(TypeError, match="shift must be a pair of ints"):
        transform_consistency(RegionModel(), InputAsMap(), x, 0, shift=0.5)
    with pytest.raises(ValueError, match="inputs must be a batch"):
        transform_consistency(RegionModel(), InputAsMap(), x[0], 0)


# --- 4. cross-model stability ----------------------------------------------------------


def test_identical_models_are_perfectly_stable_and_different_ones_are_not():
    x = images(3)
    same = LinearModel(seed=0)
    result = cross_model_stability([same, LinearModel(seed=0), same], Saliency, x, target=1)
    assert result.pairs == [(0, 1), (0, 2), (1, 2)]
    torch.testing.assert_close(result.ssim, torch.ones(3, 3))
    torch.testing.assert_close(result.spearman, torch.ones(3, 3))
    models = [LinearModel(seed=0), LinearModel(seed=1)]
    other = cross_model_stability(models, [Saliency(m) for m in models], x, target=1)
    assert other.ssim.shape == (1, 3)
    assert (other.spearman.abs() < 0.3).all()
    torch.testing.assert_close(other.mean_spearman, other.spearman[0])


def test_cross_model_errors():
    x = images(2)
    models = [LinearModel(0), LinearModel(1)]
    with pytest.raises(ValueError, match="at least 2 models"):
        cross_model_stability(models[:1], Saliency, x, 0)
    with pytest.raises(ValueError, match="holds 1 methods for 2 models"):
        cross_model_stability(models, [Saliency(models[0])], x, 0)
    with pytest.raises(TypeError, match="one per model"):
        cross_model_stability(models, Saliency(models[0]), x, 0)
    with pytest.raises(TypeError, match="forward_funcs must be a sequence"):
        cross_model_stability(models[0], Saliency, x, 0)


# --- 5. guided degradation -------------------------------------------------------------


def region_inputs_and_map(n=2):
    x = torch.zeros(n, 3, 12, 12)
    x[:, :, 2:6, 2:6] = 1.0
    region_map = torch.zeros(n, 12, 12)
    region_map[:, 2:6, 2:6] = 1.0
    return x, region_map


def test_guided_blur_rule():
    x = images(2)
    flat = torch.zeros(2, 16, 16)
    torch.testing.assert_close(guided_blur(x, flat, "most"), x)
    everywhere = guided_blur(x, flat, "least", max_sigma=2.0, n_levels=3)
    torch.testing.assert_close(everywhere, gaussian_blur(x, 13, 2.0))
    ramp = torch.linspace(0, 1, 16).expand(2, 16, -1)  # salience grows to the right
    mixed = guided_blur(x, ramp, "least", max_sigma=2.0, n_levels=3)
    torch.testing.assert_close(mixed[..., -1], x[..., -1])  # most salient column kept
    torch.testing.assert_close(mixed[..., 0], gaussian_blur(x, 13, 2.0)[..., 0])
    with pytest.raises(ValueError, match="mode must be one of"):
        guided_blur(x, flat, "middle")
    with pytest.raises(ValueError, match="n_levels must be >= 2"):
        guided_blur(x, flat, n_levels=1)
    with pytest.raises(ValueError, match="attributions has shape"):
        guided_blur(x, torch.zeros(2, 8, 8))


def test_guided_degradation_spares_or_hits_the_evidence():
    x, region_map = region_inputs_and_map()

    def method(inputs, target=None):
        return region_map

    least = guided_degradation(RegionModel(), method, x, target=0, mode="least")
    torch.testing.assert_close(least.degraded[..., 2:6, 2:6], x[..., 2:6, 2:6])
    assert (least.degraded[..., 8:, 8:] > 0).all()  # the blur spreads the region outwards
    assert (least.score_change == 0).all()
    torch.testing.assert_close(least.ssim, torch.ones(2))
    most = guided_degradation(RegionModel(), method, x, target=0, mode="most")
    assert (most.score_change < -0.3).all()
    torch.testing.assert_close(most.score_change, most.degraded_scores - most.scores)
    assert most.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(20.0)).item()] * 2)


def test_clips_are_supported():
    clips = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    model = RegionModel()
    shift = out_of_set_shift(model, InputAsMap(), clips, target=0, amounts=(0.0, 0.2))
    torch.testing.assert_close(shift.spearman[0], torch.ones(2))
    assert (shift.spearman[1] < 0.95).all()
    flat = torch.zeros(2, 1, 4, 16, 16)
    kept = guided_degradation(model, lambda inputs, target=None: flat, clips, 0, mode="most")
    assert torch.equal(kept.degraded, clips) and (kept.score_change == 0).all()
    blurred = guided_degradation(model, lambda inputs, target=None: flat, clips, 0)
    torch.testing.assert_close(blurred.degraded, gaussian_blur(clips, 31, 5.0))
    stable = cross_model_stability([model, model], [InputAsMap(), InputAsMap()], clips, 0)
    torch.testing.assert_close(stable.ssim, torch.ones(1, 2))
