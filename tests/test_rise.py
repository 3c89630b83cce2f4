import pytest
import torch
from torch import nn

from captum_borex import RISE
from captum_borex.attr.rise import random_masks


class LinearScore(nn.Module):
    """Output column 0 is a weighted sum of the pixels; column 1 is its negation."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, x):
        score = (x * self.weights).flatten(1).sum(1)
        return torch.stack([score, -score], 1)


def test_masks_are_smooth_random_and_keep_the_right_share():
    gen = torch.Generator().manual_seed(0)
    masks = random_masks(400, (32, 32), (7, 7), 0.3, gen)
    assert masks.shape == (400, 32, 32)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.03
    video = random_masks(3, (6, 16, 16), (2, 4, 4), 0.5, gen)
    assert video.shape == (3, 6, 16, 16)


def test_rise_recovers_the_important_region_of_a_linear_model():
    weights = torch.zeros(1, 1, 16, 16)
    weights[..., 2:6, 9:14] = 1.0
    model = LinearScore(weights)
    x = torch.ones(2, 1, 16, 16)
    saliency = RISE(model).attribute(x, target=0, n_masks=500, cells=4, seed=0, apply_softmax=False)
    assert saliency.shape == x.shape
    inside = saliency[:, 0, 2:6, 9:14].mean()
    outside = saliency[:, 0, 10:, :6].mean()
    assert inside > outside + 1.0


def test_normalisation_gives_the_score_for_a_constant_model():
    model = lambda x: torch.full((x.shape[0], 2), 3.0)  # noqa: E731
    x = torch.rand(2, 3, 20, 20)
    saliency = RISE(model).attribute(x, target=1, n_masks=400, seed=1, apply_softmax=False)
    torch.testing.assert_close(saliency.mean(), torch.tensor(3.0), atol=0.15, rtol=0)


def test_baselines_are_honoured():
    weights = torch.rand(1, 3, 12, 12)
    model = LinearScore(weights)
    x = torch.rand(2, 3, 12, 12)
    # With the input itself as baseline every mask shows the same image.
    same = RISE(model).attribute(
        x,
        target=0,
        baselines=x,
        n_masks=64,
        cells=3,
        seed=0,
        apply_softmax=False,
        perturbations_per_eval=64,
    )
    flat = (x * weights).flatten(1).sum(1)
    ratio = same[:, 0] / flat[:, None, None]
    masks_mean = (
        random_masks(64, (12, 12), (3, 3), 0.5, torch.Generator().manual_seed(0)).mean(0) / 0.5
    )
    torch.testing.assert_close(ratio, masks_mean.expand(2, -1, -1), atol=1e-4, rtol=1e-4)


def test_seed_reproducible_and_tuple_convention(cnn, shapes_val):
    images, labels, _ = shapes_val
    rise = RISE(cnn)
    a = rise.attribute(images[:2], target=labels[:2], n_masks=40, seed=5)
    (b,) = rise.attribute(
        (images[:2],), target=labels[:2], n_masks=40, seed=5, perturbations_per_eval=7
    )
    torch.testing.assert_close(a, b)
    alone = rise.attribute(images[1:2], target=labels[1:2], n_masks=40, seed=5)
    torch.testing.assert_close(a[1:2], alone, atol=1e-5, rtol=1e-5)
    assert RISE.get_name() == "RISE"


def test_internal_batch_size_bounds_the_model_batch_and_keeps_the_map(cnn, shapes_val, recording):
    images, labels, _ = shapes_val
    kwargs = dict(target=labels[:3], n_masks=20, seed=2, perturbations_per_eval=8)
    whole_model = recording(cnn)
    whole = RISE(whole_model).attribute(images[:3], **kwargs)
    assert whole_model.largest == 3 * 8
    split_model = recording(cnn)
    split = RISE(split_model).attribute(images[:3], internal_batch_size=5, **kwargs)
    assert split_model.largest <= 5
    assert split_model.seen == 3 + 3 * 20  # the target check, then every mask once
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n_masks": 0}, ValueError, "n_masks must be >= 1"),
        ({"keep_prob": 1.5}, ValueError, "keep_prob must be in"),
        ({"cells": 64}, ValueError, "cells"),
        ({"target": 9}, ValueError, "target 9 is out of range"),
        ({"cells": (3,)}, ValueError, "one value per spatial axis"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size must be >= 1"),
        ({"internal_batch_size": 2.0}, TypeError, "internal_batch_size must be an int"),
    ],
)
def test_bad_arguments(cnn, shapes_val, kwargs, error, message):
    images, labels, _ = shapes_val
    kwargs = {"target": labels[:2], **kwargs}
    with pytest.raises(error, match=message):
        RISE(cnn).attribute(images[:2], **kwargs)
