"""Precision / recall curves of the top-k salient pixels against ground-truth masks."""

import numpy as np
import pytest
import torch

from captum_borex.metrics.segmentation import DEFAULT_FRACTIONS, segmentation_curves


def square_masks(n=2, size=16, side=4):
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 2 : 2 + side, 3 : 3 + side] = True
    return masks


def test_mask_as_map_is_precise_until_the_mask_is_used_up():
    masks = square_masks()  # 16 of 256 pixels
    curves = segmentation_curves(masks.float(), masks, fractions=[1 / 16, 1 / 8, 1 / 4, 1.0])
    assert curves.k.tolist() == [16, 32, 64, 256]
    expected_precision = torch.tensor([1.0, 0.5, 0.25, 1 / 16]).expand(2, -1)
    torch.testing.assert_close(curves.precision, expected_precision)
    torch.testing.assert_close(curves.recall, torch.ones(2, 4))
    torch.testing.assert_close(curves.mean_precision, expected_precision.mean(1))
    torch.testing.assert_close(curves.mean_recall, torch.ones(2))


def test_reversed_map_finds_the_object_last():
    masks = square_masks()
    curves = segmentation_curves(-masks.float(), masks, fractions=[1 / 16, 0.5, 240 / 256, 1.0])
    torch.testing.assert_close(curves.precision[0], torch.tensor([0.0, 0.0, 0.0, 1 / 16]))
    torch.testing.assert_close(curves.recall[0], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_pointing_game_style_one_hot_maps():
    masks = square_masks()
    maps = torch.zeros(2, 16, 16)
    maps[0, 3, 4] = 1.0  # on the object
    maps[1, 12, 12] = 1.0  # off the object
    curves = segmentation_curves(maps, masks, fractions=[1 / 256])
    assert curves.k.tolist() == [1]
    assert curves.precision[:, 0].tolist() == [1.0, 0.0]
    assert curves.recall[:, 0].tolist() == [1 / 16, 0.0]


def test_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 10, 12, generator=gen)
    masks = torch.rand(3, 10, 12, generator=gen) > 0.7
    fractions = [0.1, 0.33, 0.5, 0.9]
    curves = segmentation_curves(maps, masks, fractions)
    for i in range(3):
        order = np.argsort(-maps[i].flatten().numpy(), kind="stable")
        inside = masks[i].flatten().numpy()[order]
        for j, f in enumerate(fractions):
            k = max(1, round(f * 120))
            assert curves.precision[i, j].item() == pytest.approx(inside[:k].sum() / k)
            assert curves.recall[i, j].item() == pytest.approx(inside[:k].sum() / inside.sum())


def test_defaults_and_layouts():
    masks = square_masks()
    maps = masks.float() + 0.01 * torch.rand(2, 16, 16)
    base = segmentation_curves(maps, masks)
    assert base.fractions.tolist() == pytest.approx(list(DEFAULT_FRACTIONS))
    assert len(DEFAULT_FRACTIONS) == 20 and DEFAULT_FRACTIONS[-1] == 1.0
    torch.testing.assert_close(base.precision[:, -1], torch.full((2,), 16 / 256))
    torch.testing.assert_close(base.recall[:, 1:], torch.ones(2, 19))
    channel_maps = maps[:, None].expand(-1, 3, -1, -1) / 3
    for layout, mask_layout in [
        (maps[:, None], masks),
        (channel_maps, masks),
        (maps, masks[:, None]),
    ]:
        other = segmentation_curves(layout, mask_layout)
        torch.testing.assert_close(other.precision, base.precision)
        torch.testing.assert_close(other.recall, base.recall)


def test_clips_count_every_frame():
    masks = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    masks[0, 1:3, 2:4, 2:4] = True  # 8 of 256 voxels
    maps = masks.float()[:, None].expand(-1, 3, -1, -1, -1)  # (N, C, T, H, W)
    curves = segmentation_curves(maps, masks, fractions=[8 / 256, 16 / 256])
    torch.testing.assert_close(curves.precision, torch.tensor([[1.0, 0.5]]))
    torch.testing.assert_close(curves.recall, torch.tensor([[1.0, 1.0]]))


def test_empty_mask_scores_zero():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    curves = segmentation_curves(torch.rand(1, 8, 8), masks)
    assert (curves.precision == 0).all() and (curves.recall == 0).all()


def test_bad_arguments():
    masks = square_masks()
    with pytest.raises(ValueError, match="masks of shape"):
        segmentation_curves(torch.rand(2, 16, 16), masks[:, :8])
    with pytest.raises(ValueError, match="fractions must lie in"):
        segmentation_curves(torch.rand(2, 16, 16), masks, fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="fractions must lie in"):
        segmentation_curves(torch.rand(2, 16, 16), masks, fractions=[1.5])
    with pytest.raises(ValueError, match="fractions must be a non-empty"):
        segmentation_curves(torch.rand(2, 16, 16), masks, fractions=[])
    with pytest.raises(TypeError, match="fractions must be a sequence"):
        segmentation_curves(torch.rand(2, 16, 16), masks, fractions=0.5)
    with pytest.raises(TypeError, match="must be tensors"):
        segmentation_curves(np.zeros((2, 16, 16)), masks)
