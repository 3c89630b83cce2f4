"""rank_fusion: fusing maps of the same inputs by their weighted mean rank."""

from __future__ import annotations

import pytest
import torch

from captum_borex import rank_fusion


def test_ranks_of_one_map_run_from_zero_to_one_with_ties_sharing_their_mean():
    m = torch.tensor([[3.0, 1.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    expected = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(rank_fusion([m]), expected)


def test_fusion_is_the_weighted_mean_rank_and_ignores_scale_and_offset():
    a = torch.tensor([[0.0, 1.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 1.0]])
    # ranks: a = (0, 0.5, 1), b = (1, 0, 0.5)
    torch.testing.assert_close(rank_fusion([a, b]), torch.tensor([[0.5, 0.25, 0.75]]))
    fused = rank_fusion([a, b], weights=[1, 3])
    torch.testing.assert_close(fused, torch.tensor([[0.75, 0.125, 0.625]]))
    torch.testing.assert_close(rank_fusion([10 * a - 4, b.exp()], weights=[1, 3]), fused)


def test_each_input_is_ranked_on_its_own_and_shape_and_dtype_are_kept():
    maps = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    before = maps.clone()
    fused = rank_fusion([maps, maps * 2])
    assert fused.shape == maps.shape and fused.dtype == torch.float32
    assert torch.equal(maps, before)
    for i in range(3):
        torch.testing.assert_close(fused[i : i + 1], rank_fusion([maps[i : i + 1]]))
        assert fused[i].min() == 0 and fused[i].max() == 1
    assert rank_fusion([torch.tensor([[2, 1]])]).dtype == torch.float64


def test_a_tuple_of_one_map_is_fused_like_captum_returns_it():
    a, b = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 0.0, 1.0]])
    fused = rank_fusion([(a,), b])
    assert isinstance(fused, tuple) and len(fused) == 1
    torch.testing.assert_close(fused[0], rank_fusion([a, b]))


@pytest.mark.parametrize(
    "maps, weights, error, message",
    [
        (torch.zeros(2, 4), None, TypeError, "maps must be a sequence of tensors"),
        ([], None, ValueError, "at least one tensor"),
        ([torch.zeros(2, 4), [0.0] * 4], None, TypeError, r"maps\[1\] must be a tensor"),
        ([(torch.zeros(2, 4),) * 2], None, TypeError, r"maps\[0\] must be a tensor"),
        ([torch.zeros(2, 4), torch.zeros(2, 5)], None, ValueError, r"maps\[1\] has shape"),
        ([torch.tensor(1.0)], None, ValueError, "first dimension"),
        ([torch.zeros(2, 4), torch.zeros(2, 4, device="meta")], None, ValueError, "must match"),
        ([torch.tensor([[0.0, float("nan")]])], None, ValueError, r"maps\[0\] contains NaN"),
        ([torch.zeros(2, 4)] * 2, [1.0], ValueError, "one number per map"),
        ([torch.zeros(2, 4)] * 2, [1.0, 0.0], ValueError, r"weights\[1\] must be a positive"),
        ([torch.zeros(2, 4)] * 2, ["a", "b"], TypeError, r"weights\[0\] must be a number"),
        ([torch.zeros(2, 4)], 2.0, TypeError, "weights must be a sequence"),
    ],
)
def test_bad_input_raises(maps, weights, error, message):
    with pytest.raises(error, match=message):
        rank_fusion(maps, weights)
