"""Pictures: map shapes (layer-sized ones upsampled), de-normalisation, colour bars, scales."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from captum_borex.viz import (
    _maps_at_size,
    clip_grid,
    explanation_figure,
    explanation_grid,
    frame_strip,
    overlay,
    save_gif,
    to_image,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def cam() -> torch.Tensor:
    """A layer-sized (7x7) non-negative map, as LayerGradCam returns."""
    return torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(1))


def _signed(n: int = 2, size: int = 28) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(2)) * 0.1


def test_layer_sized_maps_are_upsampled_like_interpolate(images, cam):
    expected = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(_maps_at_size(cam, images, "maps", "mean"), expected)
    assert torch.allclose(_maps_at_size(cam[:, 0], images, "maps", "mean"), expected)
    picture = overlay(images[0], cam[0])
    assert picture.shape == (28, 28, 3)
    assert np.allclose(picture, overlay(images[0], expected[0]))
    fig = explanation_grid(images, {"Grad-CAM 7x7": cam, "(N, h, w)": cam[:, 0]})
    heat = fig.axes[1].images[-1].get_array()
    assert heat.shape == (28, 28) and np.allclose(heat, expected[0].numpy())


def test_every_map_shape_gives_the_same_map(images):
    one = torch.rand(2, 28, 28)
    for shape_form in (one, one[:, None], one[:, None].expand(-1, 3, -1, -1)):
        assert torch.allclose(_maps_at_size(shape_form, images, "maps", "mean"), one)
    summed = _maps_at_size(one[:, None].expand(-1, 3, -1, -1), images, "maps", "sum")
    assert torch.allclose(summed, 3 * one)
    assert np.allclose(overlay(images[0], one[0]), overlay(images[:1], one[:1, None]))


def test_mean_std_undo_normalisation_for_display(images):
    normalised = (images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    shown = to_image(normalised[0], mean=MEAN, std=STD)
    assert shown.shape == (28, 28, 3)
    assert np.allclose(shown, images[0].permute(1, 2, 0).numpy(), atol=1e-5)
    fig = explanation_grid(normalised, {"map": torch.rand(2, 28, 28)}, mean=MEAN, std=STD)
    assert np.allclose(fig.axes[0].images[0].get_array(), images[0].permute(1, 2, 0), atol=1e-5)
    # Out of range after de-normalisation: clipped. Images in [0, 1]: shown as they are.
    assert to_image(normalised[0] * 5, mean=MEAN, std=STD).min() >= 0
    assert to_image(normalised[0] * 5, mean=MEAN, std=STD).max() <= 1
    assert np.allclose(to_image(images[0] * 0.5), images[0].permute(1, 2, 0) * 0.5)
    grey = to_image(images[0, :1])
    assert grey.shape == (28, 28, 3) and np.allclose(grey[..., 0], grey[..., 2])


def test_overlay_blends_and_draws_with_a_colour_bar(images):
    signed = _signed(1)[0, 0]
    picture = overlay(images[0], signed, alpha=0.4)
    assert picture.dtype.kind == "f" and picture.min() >= 0 and picture.max() <= 1
    top = float(signed.abs().max())
    colours = mpl.colormaps["RdBu_r"]((signed.numpy() + top) / (2 * top))[..., :3]
    expected = 0.6 * images[0].permute(1, 2, 0).numpy() + 0.4 * colours
    assert np.allclose(picture, expected, atol=1e-6)
    assert np.allclose(overlay(images[0], signed, alpha=0.0), images[0].permute(1, 2, 0))
    fig = Figure()
    ax = fig.add_subplot()
    overlay(images[:1], signed[None, None], ax=ax)
    assert len(fig.get_axes()) == 2  # the picture and its colour bar
    assert ax.images[-1].get_clim() == pytest.approx((-top, top))
    assert ax.images[-1].get_cmap().name == "RdBu_r"
    ax = Figure().add_subplot()
    overlay(images[0], signed.abs(), ax=ax, vmax=2.0)
    assert ax.images[-1].get_clim() == (0.0, 2.0) and ax.images[-1].get_cmap().name == "inferno"
    ax = Figure().add_subplot()
    overlay(images[0], signed, ax=ax, sign="positive")
    assert ax.images[-1].get_clim()[0] == 0.0 and ax.images[-1].get_array().min() >= 0


def test_grid_has_colour_bars_and_a_fixed_uncertainty_scale(images, cam):
    uncertainty = 0.76 + 0.2395 * torch.rand(2, 28, 28)  # the range that used to be stretched
    maps = {"Grad-CAM": cam, "BOREx": _signed()}
    fig = explanation_grid(images, maps, uncertainty, titles=["cat", "dog"])
    panels, bars = 2 * 4, 2 * 2 + 1  # a bar per map panel, one for the uncertainty column
    assert len(fig.get_axes()) == panels + bars
    axes = fig.get_axes()[:panels]
    for row in range(2):
        signed = axes[4 * row + 2].images[-1]
        low, high = signed.get_clim()
        assert low == pytest.approx(-high) and signed.get_cmap().name == "RdBu_r"
        assert axes[4 * row + 1].images[-1].get_clim()[0] == 0.0
        assert axes[4 * row + 3].images[-1].get_clim() == (0.0, 1.0)
    labels = [a.get_xlabel() + a.get_ylabel() for a in fig.get_axes()[panels:]]
    assert any("fixed scale [0, 1]" in label for label in labels)
    shared = explanation_grid(images, maps, uncertainty, vmax={"BOREx": 0.5})
    assert len(shared.get_axes()) == panels + 2 + 1 + 1
    assert shared.get_axes()[2].images[-1].get_clim() == (-0.5, 0.5)
    wide = explanation_grid(images, maps, uncertainty, uncertainty_range=(0.5, 1.0))
    assert wide.get_axes()[3].images[-1].get_clim() == (0.5, 1.0)


def test_errors_name_the_argument(images, cam):
    with pytest.raises(ValueError, match=r"maps\['x'\] has 3 maps for 2 inputs"):
        explanation_grid(images, {"x": torch.rand(3, 28, 28)})
    with pytest.raises(ValueError, match=r"maps\['x'\] has 64 channels"):
        explanation_grid(images, {"x": torch.rand(2, 64, 7, 7)})
    with pytest.raises(ValueError, match=r"maps\['x'\] must be"):
        explanation_grid(images, {"x": torch.rand(2, 1, 1, 7, 7)})
    with pytest.raises(TypeError, match=r"maps\['x'\] must be a torch.Tensor"):
        explanation_grid(images, {"x": np.zeros((2, 28, 28))})
    with pytest.raises(TypeError, match="maps must be a mapping"):
        explanation_grid(images, cam)
    with pytest.raises(ValueError, match="images must be"):
        explanation_grid(images[0], {"x": cam})
    with pytest.raises(ValueError, match="uncertainty has 1 maps"):
        explanation_grid(images, {"x": cam}, torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="titles"):
        explanation_grid(images, {"x": cam}, titles=["one"])
    with pytest.raises(ValueError, match="std must give one value per channel"):
        explanation_grid(images, {"x": cam}, mean=MEAN, std=(0.2, 0.2))
    with pytest.raises(ValueError, match="sign must be one of"):
        overlay(images[0], cam[0], sign="both")
    with pytest.raises(ValueError, match="reduce must be one of"):
        overlay(images[0], cam[0], reduce="max")
    with pytest.raises(ValueError, match="alpha"):
        overlay(images[0], cam[0], alpha=1.5)
    with pytest.raises(ValueError, match="cmap"):
        overlay(images[0], cam[0], cmap="no-such-map")
    with pytest.raises(ValueError, match="saliency has 2 maps for 1 inputs"):
        overlay(images[0], cam)
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        overlay(images[0].numpy(), cam[0])
    with pytest.raises(ValueError, match="vmax names maps that are not given"):
        explanation_grid(images, {"x": cam}, vmax={"y": 1.0})
    with pytest.raises(ValueError, match="image must be"):
        overlay(images, cam)
    with pytest.raises(ValueError, match="uncertainty_range"):
        explanation_grid(images, {"x": cam}, torch.rand(2, 28, 28), uncertainty_range=(1, 0))


def test_clips_take_layer_sized_maps_and_fixed_uncertainty(tmp_path):
    clips = torch.rand(2, 3, 4, 16, 16)
    layer = torch.rand(2, 1, 2, 4, 4) - 0.5
    expected = F.interpolate(layer, size=(4, 16, 16), mode="trilinear", align_corners=False)
    assert torch.allclose(_maps_at_size(layer, clips, "maps", "mean"), expected[:, 0])
    fig = clip_grid(clips, {"BOREx": layer}, torch.rand(2, 4, 16, 16), frames=[0, 3])
    # Per clip 3 rows of 2 frames, and a colour bar per map row and per uncertainty row.
    assert len(fig.get_axes()) == 2 * 3 * 2 + 2 * 2
    assert fig.get_axes()[4].images[-1].get_clim() == (0.0, 1.0)
    assert explanation_figure(clips, {"x": layer}, mean=0.5, std=0.5).get_axes()
    with pytest.raises(ValueError, match="frames"):
        clip_grid(clips, {"x": layer}, frames=[4])


def test_frame_strip_and_gif(tmp_path):
    clip = torch.rand(3, 8, 24, 24)
    truth = torch.zeros(8, 24, 24)
    truth[2:5, 6:12, 6:12] = 1
    frame_strip(clip, {"truth": truth, "layer": torch.rand(1, 4, 6, 6)}).savefig(
        tmp_path / "strip.png"
    )
    strip = Image.open(tmp_path / "strip.png")
    assert strip.size[0] > strip.size[1]
    save_gif(clip, truth, str(tmp_path / "clip.gif"))
    assert Image.open(tmp_path / "clip.gif").n_frames == 8
