"""Pictures of explanations: overlays, per-image grids with colour bars, frame strips and GIFs.

Every function takes maps in the shapes Captum's methods return and shows them at the
input's size:

- ``(N, H, W)`` or ``(N, 1, H, W)``: one map per image;
- ``(N, C, H, W)`` shaped like the inputs: the channels are reduced to one map, by their
  mean by default (BOREx, RISE and CAMERAS repeat one map over the channels, so the mean
  keeps its units) or by their sum with ``reduce="sum"`` (Captum's ``visualize_image_attr``
  convention, for per-channel attributions such as Integrated Gradients);
- layer-sized ``(N, 1, h, w)`` or ``(N, h, w)`` (e.g. a 7x7 ``LayerGradCam`` map):
  upsampled bilinearly to the image's size, as
  ``captum.attr.LayerAttribution.interpolate(..., interpolate_mode="bilinear")`` does;
- clips: the same with a frame axis, ``(N, [1 or C,] T, H, W)``, layer-sized ones
  upsampled trilinearly.

Signed maps (any value < 0, e.g. BOREx: evidence for the target > 0, against < 0) are drawn
with a diverging colour map centred at 0 on symmetric limits; non-negative maps with a
sequential one from 0. BOREx's uncertainty (the GP's posterior standard deviation, in
[0, 1] because the GP's output scale is 1) is drawn on the fixed scale [0, 1]. Figures are
plain :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend is set), so
they draw headless; save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from captum_borex._checks import check_choice, check_finite

Sign = Literal["auto", "all", "positive", "negative", "absolute_value"]
Reduce = Literal["mean", "sum"]
PerChannel = Sequence[float] | Tensor | float | None

#: Colour map of signed maps (centred at 0) and of non-negative maps.
SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "inferno"
#: Colour map and fixed scale of BOREx's uncertainty (posterior standard deviation).
UNCERTAINTY_CMAP = "viridis"
UNCERTAINTY_RANGE = (0.0, 1.0)
_SIGNS = ("auto", "all", "positive", "negative", "absolute_value")


def to_image(image: Tensor, mean: PerChannel = None, std: PerChannel = None) -> np.ndarray:
    """A ``(C, H, W)`` image as an ``(H, W, 3)`` float array in [0, 1] for display.

    Args:
        image: ``(C, H, W)`` image in the model's input space. One channel is shown in grey,
            more than three by their first three.
        mean: Per-channel mean (or one number) the image was normalised with; undone for
            display. Default: None
        std: Per-channel standard deviation the image was normalised with. Default: None

    Returns:
        ``(H, W, 3)`` array in [0, 1]: ``image * std + mean`` clipped to [0, 1] when ``mean``
        or ``std`` is given; otherwise the image itself if it lies in [0, 1], else min-max
        scaled.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: ``image`` is not ``(C, H, W)`` or has 2 channels, or ``mean`` / ``std``
            do not give one value per channel.

    Examples::

        >>> ax.imshow(to_image(x[0], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    """
    return _display(_one_image(image), mean, std, "image")[0]


def to_heatmap(saliency: Tensor) -> np.ndarray:
    """A saliency map (``(H, W)``, ``(1, H, W)`` or ``(C, H, W)`` summed) min-max scaled to [0, 1].

    Kept for compatibility: the overlays and grids draw maps on stated scales instead.
    """
    s = saliency.detach().float().cpu()
    if s.dim() == 3:
        s = s.sum(0)
    if s.dim() != 2:
        raise ValueError(f"saliency must be (H, W) or (C, H, W), got shape {tuple(saliency.shape)}")
    lo, hi = s.min(), s.max()
    return ((s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s)).numpy()


def overlay(
    image: Tensor,
    saliency: Tensor,
    alpha: float = 0.5,
    cmap: str | Colormap | None = None,
    *,
    mean: PerChannel = None,
    std: PerChannel = None,
    sign: Sign = "auto",
    vmax: float | None = None,
    reduce: Reduce = "mean",
    ax: Axes | None = None,
    colorbar: bool = True,
) -> np.ndarray:
    """Blend one image's map over it, in one call (like pytorch-grad-cam's ``show_cam_on_image``).

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` image in the model's input space.
        saliency: Its map in any shape of the module docstring, batched or not: ``(H, W)``,
            ``(1 or C, H, W)``, ``(1, 1 or C, H, W)``, or layer-sized ``(h, w)``,
            ``(1, h, w)``, ``(1, 1, h, w)`` (upsampled bilinearly).
        alpha: Weight of the colours: ``(1 - alpha) * image + alpha * colour``. Default: 0.5
        cmap: Colour map. Default: ``"RdBu_r"`` for signed maps, ``"inferno"`` otherwise
        mean: Per-channel mean the image was normalised with (see :func:`to_image`).
            Default: None
        std: Per-channel standard deviation the image was normalised with. Default: None
        sign: Which values to show: ``"all"`` (diverging, limits ``[-vmax, vmax]``),
            ``"positive"``, ``"negative"`` (their magnitude) or ``"absolute_value"`` (all
            sequential, limits ``[0, vmax]``); ``"auto"`` is ``"all"`` when the map has a
            value < 0, else ``"positive"``. Default: "auto"
        vmax: Upper colour limit. Default: the largest shown magnitude of the map
        reduce: How the channels of an input-shaped map become one: ``"mean"`` or
            ``"sum"``. Default: "mean"
        ax: If given, the overlay is drawn there (the image, then the map with ``alpha``).
            Default: None
        colorbar: Add a colour bar next to ``ax``. Default: True

    Returns:
        ``(H, W, 3)`` float array in [0, 1].

    Raises:
        TypeError: ``image`` or ``saliency`` is not a tensor.
        ValueError: a shape that is none of the above, ``alpha`` outside [0, 1], an unknown
            ``sign``, ``reduce`` or ``cmap``, or ``mean`` / ``std`` of the wrong length.

    Examples::

        >>> picture = overlay(x[0], gradcam[0], mean=MEAN, std=STD)  # (224, 224, 3)
        >>> overlay(x[0], borex[0], ax=ax)  # draws it, with a colour bar
    """
    batch = _one_image(image)
    if isinstance(saliency, Tensor) and saliency.dim() <= 3:
        saliency = saliency[None]
    heat = _maps_at_size(saliency, batch, "saliency", reduce)[0].numpy()
    style = _map_style(heat, sign, vmax, cmap, alpha)
    shown, norm, colours = style.scale(heat)
    rgb = _display(batch, mean, std, "image")[0]
    if ax is not None:
        drawn = _draw(ax, rgb, shown, norm, colours, style.alpha)
        if colorbar:
            _colorbar(ax.get_figure(), drawn, ax)
    return _blend(rgb, shown, norm, colours, style.alpha)


def explanation_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    titles: Sequence[str] | None = None,
    cell_size: float = 2.0,
    *,
    mean: PerChannel = None,
    std: PerChannel = None,
    alpha: float = 0.5,
    cmap: str | Colormap | None = None,
    sign: Sign = "auto",
    vmax: float | Mapping[str, float] | None = None,
    reduce: Reduce = "mean",
    uncertainty_range: tuple[float, float] = UNCERTAINTY_RANGE,
) -> Figure:
    """One row per image: the input, an overlay per named map, and optionally uncertainty.

    Each map panel has a colour bar: signed maps on symmetric limits around 0 with a
    diverging colour map, non-negative maps from 0 with a sequential one (see
    :func:`overlay`). With ``vmax`` a column shares one scale and one colour bar.

    Args:
        images: ``(N, C, H, W)`` inputs in the model's input space.
        maps: Column title -> maps of the inputs, in any image shape of the module
            docstring: ``(N, H, W)``, ``(N, 1, H, W)``, input-shaped ``(N, C, H, W)`` or
            layer-sized ``(N, 1, h, w)`` / ``(N, h, w)`` (upsampled bilinearly).
        uncertainty: BOREx's uncertainty (``details.uncertainty``), a map of the same
            shapes, drawn on the fixed scale ``uncertainty_range``. Default: None
        titles: A label per row (e.g. class names). Default: None
        cell_size: Inches per panel. Default: 2.0
        mean: Per-channel mean the images were normalised with (see :func:`to_image`).
            Default: None
        std: Per-channel standard deviation the images were normalised with. Default: None
        alpha: Weight of the map's colours over the image. Default: 0.5
        cmap: Colour map of the maps. Default: ``"RdBu_r"`` signed, ``"inferno"`` otherwise
        sign: As in :func:`overlay`, decided per map over all images. Default: "auto"
        vmax: Upper colour limit shared by all rows, one number or one per column title
            (e.g. BOREx's map is in units of the target's probability, so one scale
            compares images). Default: None (each panel its own largest magnitude)
        reduce: Channels of input-shaped maps: ``"mean"`` or ``"sum"``. Default: "mean"
        uncertainty_range: Fixed colour limits of the uncertainty. Default: (0.0, 1.0), the
            range of the GP's posterior standard deviation

    Returns:
        A matplotlib Figure (save it with ``fig.savefig(path)``).

    Raises:
        TypeError: ``images`` or a map is not a tensor, or ``maps`` is not a mapping.
        ValueError: a map's shape or batch size does not fit ``images``, ``titles`` is not
            one per image, or an argument is out of its range.

    Examples::

        >>> fig = explanation_grid(images, {"Grad-CAM": cam, "BOREx": refined},
        ...                        details.uncertainty, mean=MEAN, std=STD)
        >>> fig.savefig("explanations.png")
    """
    images = _batch(images, "images", "NCHW")
    heats = _named_maps(maps, images, reduce)
    _check_vmax(vmax, heats)
    rgb = _display(images, mean, std, "images")
    n, columns = len(images), 1 + len(heats) + (uncertainty is not None)
    _check_titles(titles, n)
    fig = Figure(figsize=(1.15 * cell_size * columns, cell_size * n), layout="constrained")
    axes = fig.subplots(n, columns, squeeze=False)
    for i in range(n):
        _draw(axes[i, 0], rgb[i])
    axes[0, 0].set_title("input", fontsize=9)
    for j, (name, heat) in enumerate(heats.items(), start=1):
        style = _map_style(heat.numpy(), sign, _pick(vmax, name), cmap, alpha)
        together = style.vmax is not None
        _panels(fig, axes[:, j], rgb, heat.numpy(), style, together, "bottom")
        axes[0, j].set_title(name, fontsize=9)
    if uncertainty is not None:
        std_maps = _maps_at_size(uncertainty, images, "uncertainty", "mean")
        _panels(
            fig,
            axes[:, -1],
            [None] * n,
            std_maps.numpy(),
            _uncertainty_style(uncertainty_range),
            True,
            "bottom",
        )
        axes[0, -1].set_title("uncertainty", fontsize=9)
    for i, title in enumerate(titles or []):
        axes[i, 0].set_ylabel(title, fontsize=8)
    return fig


def frame_strip(
    clip: Tensor,
    maps: Mapping[str, Tensor],
    frames: Sequence[int] | None = None,
    cell_size: float = 1.6,
    **kwargs: Any,
) -> Figure:
    """A clip's frames in a row, with one row of overlays under them per named map.

    Args:
        clip: ``(C, T, H, W)`` clip.
        maps: Row title -> map of the clip (``(C, T, H, W)``, ``(1, T, H, W)``,
            ``(T, H, W)``, or layer-sized ``(1, t, h, w)`` / ``(t, h, w)``), all shown frames
            on one colour scale with one colour bar.
        frames: Frame indices to show. Default: all
        cell_size: Inches per panel. Default: 1.6
        **kwargs: Keyword arguments of :func:`clip_grid` (``mean``, ``std``, ``sign``, ...).

    Returns:
        A matplotlib Figure.

    Examples::

        >>> frame_strip(clips[0], {"BOREx": attributions[0]}).savefig("strip.png")
    """
    clip = _batch(clip, "clip", "CTHW")
    if not isinstance(maps, Mapping):
        raise TypeError(f"maps must be a mapping of titles to tensors, got {type(maps).__name__}")
    batched = {k: v[None] if isinstance(v, Tensor) else v for k, v in maps.items()}
    return clip_grid(clip[None], batched, None, frames, cell_size, **kwargs)


def clip_grid(
    clips: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    frames: Sequence[int] | None = None,
    cell_size: float = 1.6,
    titles: Sequence[str] | None = None,
    *,
    mean: PerChannel = None,
    std: PerChannel = None,
    alpha: float = 0.5,
    cmap: str | Colormap | None = None,
    sign: Sign = "auto",
    vmax: float | Mapping[str, float] | None = None,
    reduce: Reduce = "mean",
    uncertainty_range: tuple[float, float] = UNCERTAINTY_RANGE,
) -> Figure:
    """Frame strips of several clips, stacked: per clip its frames, then a row per map.

    Args:
        clips: ``(N, C, T, H, W)`` clips in the model's input space.
        maps: Row title -> maps of the clips (``(N, C, T, H, W)``, ``(N, 1, T, H, W)``,
            ``(N, T, H, W)``, or layer-sized ``(N, 1, t, h, w)`` / ``(N, t, h, w)``,
            upsampled trilinearly); each row on one colour scale with one colour bar.
        uncertainty: BOREx's uncertainty, a map of the same shapes, drawn on the fixed scale
            ``uncertainty_range``. Default: None
        frames: Frame indices to show. Default: all
        cell_size: Inches per panel. Default: 1.6
        titles: A label per clip. Default: None
        mean: As in :func:`explanation_grid`.
        std: As in :func:`explanation_grid`.
        alpha: As in :func:`explanation_grid`.
        cmap: As in :func:`explanation_grid`.
        sign: As in :func:`explanation_grid`.
        vmax: As in :func:`explanation_grid`; without it a row's scale is its largest shown
            magnitude over the shown frames.
        reduce: As in :func:`explanation_grid`.
        uncertainty_range: As in :func:`explanation_grid`.

    Returns:
        A matplotlib Figure.

    Raises:
        TypeError: ``clips`` or a map is not a tensor, or ``maps`` is not a mapping.
        ValueError: a map does not fit ``clips``, a frame index is out of range, or
            ``titles`` is not one per clip.
    """
    clips = _batch(clips, "clips", "NCTHW")
    heats = _named_maps(maps, clips, reduce)
    _check_vmax(vmax, heats)
    std_maps = None
    if uncertainty is not None:
        std_maps = _maps_at_size(uncertainty, clips, "uncertainty", "mean").numpy()
    shown = _check_frames(frames, clips.shape[2])
    rgb = _display(clips, mean, std, "clips")[:, shown]
    _check_titles(titles, len(clips))
    styles = {k: _map_style(v.numpy(), sign, _pick(vmax, k), cmap, alpha) for k, v in heats.items()}
    names = ["input", *heats] + (["uncertainty"] if std_maps is not None else [])
    rows = len(names) * len(clips)
    fig = Figure(figsize=(cell_size * (len(shown) + 1), cell_size * rows), layout="constrained")
    axes = fig.subplots(rows, len(shown), squeeze=False)
    for n in range(len(clips)):
        top = n * len(names)
        for j, t in enumerate(shown):
            _draw(axes[top, j], rgb[n, j])
            axes[top, j].set_title(f"t={t}", fontsize=8)
        for i, (name, heat) in enumerate(heats.items(), start=1):
            _panels(fig, axes[top + i], rgb[n], heat[n, shown].numpy(), styles[name], True)
        if std_maps is not None:
            style = _uncertainty_style(uncertainty_range)
            _panels(
                fig,
                axes[top + len(names) - 1],
                [None] * len(shown),
                std_maps[n, shown],
                style,
                True,
            )
        for i, name in enumerate(names):
            label = f"{titles[n]}\n{name}" if titles is not None and i == 0 else name
            axes[top + i, 0].set_ylabel(label, fontsize=8)
    return fig


def explanation_figure(
    inputs: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    titles: Sequence[str] | None = None,
    **kwargs: Any,
) -> Figure:
    """:func:`explanation_grid` for images ``(N, C, H, W)``, :func:`clip_grid` for clips.

    ``**kwargs`` (``mean``, ``std``, ``sign``, ``vmax``, ...) go to the chosen function.
    """
    if isinstance(inputs, Tensor) and inputs.dim() == 5:
        return clip_grid(inputs, maps, uncertainty, titles=titles, **kwargs)
    return explanation_grid(inputs, maps, uncertainty, titles=titles, **kwargs)


def save_gif(
    clip: Tensor,
    saliency: Tensor,
    path: str,
    fps: float = 4.0,
    alpha: float = 0.5,
    *,
    mean: PerChannel = None,
    std: PerChannel = None,
    cmap: str | Colormap | None = None,
    sign: Sign = "auto",
    vmax: float | None = None,
    reduce: Reduce = "mean",
) -> None:
    """Write an animated GIF of a clip with its saliency overlaid (Pillow).

    Args:
        clip: ``(C, T, H, W)`` clip.
        saliency: Its map, ``(C, T, H, W)``, ``(1, T, H, W)``, ``(T, H, W)`` or layer-sized,
            on one colour scale over all frames.
        path: Output file (``.gif``).
        fps: Frames per second. Default: 4.0
        alpha: Weight of the heat map. Default: 0.5
        mean: As in :func:`overlay`.
        std: As in :func:`overlay`.
        cmap: As in :func:`overlay`.
        sign: As in :func:`overlay`.
        vmax: As in :func:`overlay`.
        reduce: As in :func:`overlay`.

    Examples::

        >>> save_gif(clips[0], attributions[0], "explanation.gif")
    """
    from PIL import Image

    batch = _batch(clip, "clip", "CTHW")[None]
    saliency = saliency[None] if isinstance(saliency, Tensor) else saliency
    heat = _maps_at_size(saliency, batch, "saliency", reduce)[0].numpy()
    style = _map_style(heat, sign, vmax, cmap, alpha)
    shown, norm, colours = style.scale(heat)
    rgb = _display(batch, mean, std, "clip")[0]
    pictures = [
        Image.fromarray((_blend(rgb[t], shown[t], norm, colours, alpha) * 255).astype(np.uint8))
        for t in range(len(rgb))
    ]
    pictures[0].save(
        path, save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0
    )


@dataclass(frozen=True)
class _Style:
    """How one map is coloured: which values, which colour map, which limits."""

    sign: str
    cmap: Colormap
    alpha: float
    vmax: float | None = None
    limits: tuple[float, float] | None = None
    label: str | None = None

    def scale(self, values: np.ndarray) -> tuple[np.ndarray, Normalize, Colormap]:
        """The values shown, their colour limits and the colour map."""
        if self.limits is not None:
            return values, Normalize(*self.limits), self.cmap
        shown = {
            "all": values,
            "positive": np.maximum(values, 0),
            "negative": np.maximum(-values, 0),
            "absolute_value": np.abs(values),
        }[self.sign]
        top = self.vmax if self.vmax is not None else float(np.abs(shown).max(initial=0.0))
        top = top if top > 0 else 1.0
        return shown, Normalize(-top if self.sign == "all" else 0.0, top), self.cmap


def _map_style(
    values: np.ndarray, sign: str, vmax: float | None, cmap: Any, alpha: float
) -> _Style:
    """The style of a map: ``sign="auto"`` resolved over all of ``values``, inputs checked."""
    check_choice(sign, "sign", _SIGNS)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if vmax is not None and not (isinstance(vmax, (int, float)) and 0 < vmax < float("inf")):
        raise ValueError(f"vmax must be a positive finite number, got {vmax!r}")
    if sign == "auto":
        sign = "all" if bool((values < 0).any()) else "positive"
    default = SIGNED_CMAP if sign == "all" else UNSIGNED_CMAP
    vmax = None if vmax is None else float(vmax)
    return _Style(sign, _colour_map(default if cmap is None else cmap), float(alpha), vmax)


def _uncertainty_style(limits: tuple[float, float]) -> _Style:
    """BOREx's uncertainty on the fixed scale ``limits``, stated in its colour-bar label."""
    lo, hi = (float(v) for v in limits)
    if not lo < hi:
        raise ValueError(f"uncertainty_range must be (low, high) with low < high, got {limits}")
    label = f"posterior std, fixed scale [{lo:g}, {hi:g}]"
    return _Style("all", _colour_map(UNCERTAINTY_CMAP), 1.0, limits=(lo, hi), label=label)


def _colour_map(cmap: Any) -> Colormap:
    try:
        return mpl.colormaps.get_cmap(cmap)
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"cmap must be a matplotlib colour map or its name, got {cmap!r}"
        ) from None


def _maps_at_size(values: Any, inputs: Tensor, name: str, reduce: str) -> Tensor:
    """Any accepted map of ``inputs`` as ``(N, *spatial)`` at the inputs' size (float, CPU).

    ``values`` is ``(N, *s)`` or ``(N, 1 or C, *s)`` with ``s`` the inputs' spatial shape or
    a smaller (layer) one, upsampled bilinearly (images) or trilinearly (clips).
    """
    check_choice(reduce, "reduce", ("mean", "sum"))
    if not isinstance(values, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    n, channels, *spatial = inputs.shape
    kinds = (
        "(N, H, W), (N, 1, H, W) or (N, C, H, W)" if len(spatial) == 2 else "(N, [1 or C,] T, H, W)"
    )
    v = values.detach().float().cpu()
    v = v[:, None] if v.dim() == len(spatial) + 1 else v
    if v.dim() != len(spatial) + 2:
        raise ValueError(f"{name} must be {kinds}, got shape {tuple(values.shape)}")
    if v.shape[0] != n:
        raise ValueError(
            f"{name} has {v.shape[0]} maps for {n} inputs (shape {tuple(values.shape)})"
        )
    if v.shape[1] not in (1, channels):
        raise ValueError(
            f"{name} has {v.shape[1]} channels where the inputs have {channels}: reduce a "
            f"layer's channels to one map first (shape {tuple(values.shape)})"
        )
    check_finite(v, name)
    v = v.mean(1, keepdim=True) if reduce == "mean" else v.sum(1, keepdim=True)
    if list(v.shape[2:]) != spatial:
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        v = F.interpolate(v, size=spatial, mode=mode, align_corners=False)
    return v[:, 0]


def _named_maps(maps: Any, inputs: Tensor, reduce: str) -> dict[str, Tensor]:
    if not isinstance(maps, Mapping):
        raise TypeError(f"maps must be a mapping of titles to tensors, got {type(maps).__name__}")
    return {k: _maps_at_size(v, inputs, f"maps[{k!r}]", reduce) for k, v in maps.items()}


def _display(inputs: Tensor, mean: PerChannel, std: PerChannel, name: str) -> np.ndarray:
    """``(N, C, *spatial)`` inputs as ``(N, *spatial, 3)`` in [0, 1] (see :func:`to_image`)."""
    x = inputs.detach().float().cpu()
    channels = x.shape[1]
    if channels == 2:
        raise ValueError(f"{name} must have 1 (grey) or >= 3 channels, got 2")
    if mean is not None or std is not None:
        shape = (1, channels) + (1,) * (x.dim() - 2)
        m = _per_channel(mean, channels, "mean", 0.0).view(shape)
        s = _per_channel(std, channels, "std", 1.0).view(shape)
        x = (x * s + m).clamp(0, 1)
    elif x.min() < 0 or x.max() > 1:
        lo = x.flatten(1).min(1).values.view(-1, *(1,) * (x.dim() - 1))
        hi = x.flatten(1).max(1).values.view_as(lo)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    x = x.expand(-1, 3, *x.shape[2:]) if channels == 1 else x[:, :3]
    return x.movedim(1, -1).numpy()


def _per_channel(values: PerChannel, channels: int, name: str, default: float) -> Tensor:
    if values is None:
        return torch.full((channels,), default)
    t = torch.as_tensor(values, dtype=torch.float32).detach().cpu().flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"{name} must give one value per channel ({channels}), got {t.numel()}")
    return t


def _batch(x: Any, name: str, layout: str) -> Tensor:
    """``x`` if it is a tensor with as many dimensions as ``layout`` names, e.g. "NCHW"."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(layout):
        raise ValueError(f"{name} must be ({', '.join(layout)}), got shape {tuple(x.shape)}")
    return x


def _one_image(image: Any) -> Tensor:
    """A ``(C, H, W)`` or ``(1, C, H, W)`` image as ``(1, C, H, W)``."""
    if isinstance(image, Tensor) and image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"image must be (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
        return image
    return _batch(image, "image", "CHW")[None]


def _check_vmax(vmax: Any, names: Mapping[str, Tensor]) -> None:
    unknown = set(vmax) - set(names) if isinstance(vmax, Mapping) else set()
    if unknown:
        raise ValueError(f"vmax names maps that are not given: {sorted(unknown)}")


def _check_titles(titles: Sequence[str] | None, n: int) -> None:
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must give one label per input ({n}), got {len(titles)}")


def _check_frames(frames: Sequence[int] | None, length: int) -> list[int]:
    shown = list(range(length)) if frames is None else [int(t) for t in frames]
    if not shown or any(not -length <= t < length for t in shown):
        raise ValueError(f"frames must be indices into {length} frames, got {frames}")
    return [t % length for t in shown]


def _pick(vmax: float | Mapping[str, float] | None, name: str) -> float | None:
    return vmax.get(name) if isinstance(vmax, Mapping) else vmax


def _blend(
    rgb: np.ndarray, shown: np.ndarray, norm: Normalize, cmap: Colormap, alpha: float
) -> np.ndarray:
    colours = cmap(norm(shown))[..., :3]
    return np.clip((1 - alpha) * rgb + alpha * colours, 0, 1)


def _draw(
    ax: Axes,
    rgb: np.ndarray | None,
    shown: np.ndarray | None = None,
    norm: Normalize | None = None,
    cmap: Colormap | None = None,
    alpha: float = 1.0,
) -> AxesImage | None:
    """The picture ``rgb`` and over it the map ``shown`` (as :func:`_blend`), without ticks."""
    if rgb is not None:
        ax.imshow(rgb)
    drawn = None if shown is None else ax.imshow(shown, cmap=cmap, norm=norm, alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


def _panels(
    fig: Figure,
    axes: Sequence[Axes],
    backgrounds: Sequence[np.ndarray | None],
    values: np.ndarray,
    style: _Style,
    together: bool,
    location: str = "right",
) -> None:
    """Draw ``values[k]`` over ``backgrounds[k]`` in ``axes[k]`` with colour bars.

    ``together``: one scale over all panels and one colour bar for them (at ``location``);
    otherwise each panel its own scale and colour bar.
    """
    axes = list(axes)
    if together:
        shown, norm, _ = style.scale(values)
        scaled = [(s, norm) for s in shown]
    else:
        scaled = [style.scale(v)[:2] for v in values]
    for ax, background, (picture, norm) in zip(axes, backgrounds, scaled):
        drawn = _draw(ax, background, picture, norm, style.cmap, style.alpha)
        if not together:
            _colorbar(fig, drawn, ax, style.label)
    if together:
        _colorbar(fig, drawn, axes, style.label, location)


def _colorbar(
    fig: Figure,
    drawn: AxesImage,
    ax: Axes | list[Axes],
    label: str | None = None,
    location: str = "right",
) -> None:
    shrink = 0.9 if isinstance(ax, Axes) else 0.8
    bar = fig.colorbar(drawn, ax=ax, location=location, shrink=shrink, fraction=0.06, pad=0.02)
    bar.locator = MaxNLocator(4)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=6)
    if label:
        bar.set_label(label, fontsize=7)
