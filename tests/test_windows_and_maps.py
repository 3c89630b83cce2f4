import pytest
import torch

from captum_borex.bo.reconstruction import box_mean, lattice_to_full, windows_to_map
from captum_borex.bo.windows import WindowSpace


def image_space(h: int = 12, w: int = 10, sizes=(1, 2, 3)) -> WindowSpace:
    return WindowSpace((h, w), [sizes], (0, 0), (1.0, 1.0))


def test_masks_cover_half_open_window_clipped_to_image():
    space = image_space()
    masks = space.masks(torch.tensor([1, 2]), torch.tensor([[5, 5], [0, 9]]))
    assert masks.shape == (2, 12, 10)
    expected = torch.zeros(12, 10, dtype=torch.bool)
    expected[3:7, 3:7] = True
    assert torch.equal(masks[0], expected)
    corner = torch.zeros(12, 10, dtype=torch.bool)
    corner[0:3, 6:10] = True
    assert torch.equal(masks[1], corner)


def test_grid_is_size_major_and_reshapes_to_full_layout():
    space = image_space()
    grid = space.grid((1, 1))
    assert len(grid) == 3 * 12 * 10
    assert torch.equal(grid.combos.view(3, 12, 10)[:, 0, 0], torch.arange(3))
    assert torch.equal(grid.centres.view(3, 12, 10, 2)[1, 4, 7], torch.tensor([4, 7]))
    assert grid.features.shape == (360, 3)


def test_grid_stride_centres_lattice_and_features_use_units():
    space = WindowSpace((9, 9), [(2,)], (0, 0), (0.5, 0.5))
    (rows, cols) = space.axis_centres((4, 4))
    assert rows.tolist() == [0, 4, 8]
    feats = space.features(torch.tensor([0]), torch.tensor([[4, 8]]))
    assert feats.tolist() == [[8.0, 16.0, 4.0]]


def test_video_space_groups_time_and_space():
    space = WindowSpace((4, 8, 8), [(1, 2), (2, 3)], (0, 1, 1), (1.0, 1.0, 1.0))
    assert space.n_combos == 4 and space.n_features == 5
    assert space.combos.tolist() == [[1, 2, 2], [1, 3, 3], [2, 2, 2], [2, 3, 3]]
    mask = space.masks(torch.tensor([1]), torch.tensor([[0, 4, 4]]))[0]
    assert mask.sum() == 1 * 6 * 6


def test_neighbourhood_clips_to_axes():
    space = image_space()
    near = space.neighbourhood(torch.tensor([0]), torch.tensor([[0, 9]]), [1, 1])
    assert near.centres.shape == (1, 9, 2)
    assert near.centres[..., 0].min() == 0 and near.centres[..., 1].max() == 9


def brute_box_mean(x: torch.Tensor, half: int) -> torch.Tensor:
    out = torch.empty_like(x)
    h, w = x.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(i - half, 0) : i + half + 1, max(j - half, 0) : j + half + 1].mean()
    return out


@pytest.mark.parametrize("half", [0, 1, 3, 20])
def test_box_mean_matches_brute_force_at_borders(half):
    x = torch.randn(7, 9, dtype=torch.float64)
    got = box_mean(x[None], [half, half], [1, 2])[0]
    torch.testing.assert_close(got, brute_box_mean(x, half))


def test_windows_to_map_averages_sizes_and_keeps_constants():
    space = image_space()
    constant = torch.full((2, 3, 12, 10), 0.25, dtype=torch.float64)
    torch.testing.assert_close(
        windows_to_map(constant, space), torch.full((2, 12, 10), 0.25, dtype=torch.float64)
    )
    values = torch.randn(1, 3, 12, 10, dtype=torch.float64)
    expected = sum(brute_box_mean(values[0, s], half) for s, half in enumerate((1, 2, 3))) / 3
    torch.testing.assert_close(windows_to_map(values, space)[0], expected)


def test_lattice_to_full_is_exact_for_linear_functions_inside_the_lattice():
    positions = torch.tensor([1, 4, 7])
    values = (2.0 * positions.double() + 1.0)[None]
    full = lattice_to_full(values, [positions], [9], [1])[0]
    torch.testing.assert_close(full[1:8], 2.0 * torch.arange(1, 8).double() + 1.0)
    assert full[0] == values[0, 0] and full[8] == values[0, -1]
