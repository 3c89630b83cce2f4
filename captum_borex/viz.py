"""Pictures of explanations: heat-map overlays, per-sample grids, frame strips and GIFs."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def to_image(image: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` tensor as an ``(H, W, 3)`` float array in [0, 1] (min-max scaled)."""
    if image.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    x = image.detach().float().cpu()
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return x.permute(1, 2, 0).numpy()


def to_heatmap(saliency: Tensor) -> np.ndarray:
    """A saliency map (``(H, W)``, ``(1, H, W)`` or ``(C, H, W)`` summed) scaled to [0, 1]."""
    s = saliency.detach().float().cpu()
    if s.dim() == 3:
        s = s.sum(0)
    if s.dim() != 2:
        raise ValueError(f"saliency must be (H, W) or (C, H, W), got shape {tuple(saliency.shape)}")
    lo, hi = s.min(), s.max()
    return ((s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s)).numpy()


def overlay(image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a heat map over an image.

    Args:
        image: ``(C, H, W)`` image.
        saliency: Map of the image's size (see :func:`to_heatmap`).
        alpha: Weight of the heat map. Default: 0.5
        cmap: Matplotlib colour map. Default: "jet"

    Returns:
        ``(H, W, 3)`` array in [0, 1].

    Examples::

        >>> plt.imshow(overlay(images[0], attributions[0]))
    """
    heat = plt.get_cmap(cmap)(to_heatmap(saliency))[..., :3]
    return np.clip((1 - alpha) * to_image(image) + alpha * heat, 0, 1)


def explanation_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    titles: list[str] | None = None,
    cell_size: float = 2.0,
) -> Figure:
    """One row per image: the input, an overlay per named map, and optionally uncertainty.

    Args:
        images: ``(N, C, H, W)`` inputs.
        maps: Column title -> maps of the inputs (input-shaped, ``(N, 1, H, W)`` or
            ``(N, H, W)``).
        uncertainty: ``(N, H, W)`` BOREx uncertainty, shown in grey scale. Default: None
        titles: A label per row (e.g. class names). Default: None
        cell_size: Inches per panel. Default: 2.0

    Returns:
        A matplotlib Figure (save it with ``fig.savefig(path)``).

    Examples::

        >>> fig = explanation_grid(images, {"prior": prior, "BOREx": refined}, details.uncertainty)
        >>> fig.savefig("explanations.png")
    """
    n = images.shape[0]
    columns = 1 + len(maps) + (uncertainty is not None)
    fig, axes = plt.subplots(
        n, columns, figsize=(cell_size * columns, cell_size * n), squeeze=False
    )
    for i in range(n):
        panels = [("input", to_image(images[i]), None)]
        for name, values in maps.items():
            panels.append((name, overlay(images[i], _per_image(values, i)), None))
        if uncertainty is not None:
            panels.append(("uncertainty", to_heatmap(_per_image(uncertainty, i)), "gray"))
        for j, (name, picture, cmap) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(picture, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def frame_strip(
    clip: Tensor,
    maps: Mapping[str, Tensor],
    frames: list[int] | None = None,
    cell_size: float = 1.6,
) -> Figure:
    """A clip's frames in a row, with one row of overlays under them per named map.

    Args:
        clip: ``(C, T, H, W)`` clip.
        maps: Row title -> map of the clip (``(C, T, H, W)``, ``(1, T, H, W)`` or
            ``(T, H, W)``), all frames on one colour scale.
        frames: Frame indices to show. Default: all
        cell_size: Inches per panel. Default: 1.6

    Returns:
        A matplotlib Figure.

    Examples::

        >>> frame_strip(clips[0], {"BOREx": attributions[0]}).savefig("strip.png")
    """
    return clip_grid(clip[None], {k: v[None] for k, v in maps.items()}, None, frames, cell_size)


def clip_grid(
    clips: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    frames: list[int] | None = None,
    cell_size: float = 1.6,
    titles: list[str] | None = None,
) -> Figure:
    """Frame strips of several clips, stacked: per clip its frames, then a row per map.

    Args:
        clips: ``(N, C, T, H, W)`` clips.
        maps: Row title -> maps of the clips (``(N, C, T, H, W)``, ``(N, 1, T, H, W)`` or
            ``(N, T, H, W)``); each clip's map on one colour scale over its frames.
        uncertainty: ``(N, T, H, W)`` BOREx uncertainty, shown in grey scale. Default: None
        frames: Frame indices to show. Default: all
        cell_size: Inches per panel. Default: 1.6
        titles: A label per clip. Default: None

    Returns:
        A matplotlib Figure.
    """
    if clips.dim() != 5:
        raise ValueError(f"clips must be (N, C, T, H, W), got shape {tuple(clips.shape)}")
    shown = list(range(clips.shape[2])) if frames is None else list(frames)
    names = ["input", *maps] + (["uncertainty"] if uncertainty is not None else [])
    rows = len(names) * clips.shape[0]
    fig, axes = plt.subplots(
        rows, len(shown), figsize=(cell_size * len(shown), cell_size * rows), squeeze=False
    )
    for n, clip in enumerate(clips):
        top = n * len(names)
        heats = [_clip_heat(_per_image(values, n)) for values in maps.values()]
        for j, t in enumerate(shown):
            axes[top, j].imshow(to_image(clip[:, t]))
            axes[top, j].set_title(f"t={t}", fontsize=8)
            for i, heat in enumerate(heats, start=1):
                axes[top + i, j].imshow(_blend(clip[:, t], heat[t]))
            if uncertainty is not None:
                std = _clip_heat(uncertainty[n])
                axes[top + len(names) - 1, j].imshow(std[t], cmap="gray", vmin=0, vmax=1)
        for i, name in enumerate(names):
            label = f"{titles[n]}\n{name}" if titles is not None and i == 0 else name
            axes[top + i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def explanation_figure(
    inputs: Tensor,
    maps: Mapping[str, Tensor],
    uncertainty: Tensor | None = None,
    titles: list[str] | None = None,
) -> Figure:
    """:func:`explanation_grid` for images ``(N, C, H, W)``, :func:`clip_grid` for clips."""
    if inputs.dim() == 5:
        return clip_grid(inputs, maps, uncertainty, titles=titles)
    return explanation_grid(inputs, maps, uncertainty, titles=titles)


def save_gif(
    clip: Tensor, saliency: Tensor, path: str, fps: float = 4.0, alpha: float = 0.5
) -> None:
    """Write an animated GIF of a clip with its saliency overlaid (Pillow).

    Args:
        clip: ``(C, T, H, W)`` clip.
        saliency: Its map, ``(C, T, H, W)``, ``(1, T, H, W)`` or ``(T, H, W)``, on one
            colour scale over all frames.
        path: Output file (``.gif``).
        fps: Frames per second. Default: 4.0
        alpha: Weight of the heat map. Default: 0.5

    Examples::

        >>> save_gif(clips[0], attributions[0], "explanation.gif")
    """
    from PIL import Image

    heat = _clip_heat(saliency)
    pictures = [
        Image.fromarray((_blend(clip[:, t], heat[t], alpha) * 255).astype(np.uint8))
        for t in range(clip.shape[1])
    ]
    pictures[0].save(
        path, save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0
    )


def _clip_heat(values: Tensor) -> np.ndarray:
    """A clip map scaled to [0, 1] over all its frames: ``(T, H, W)``."""
    v = values.detach().float().cpu()
    if v.dim() == 4:
        v = v.sum(0)
    if v.dim() != 3:
        raise ValueError(f"clip maps must be (C, T, H, W) or (T, H, W), got {tuple(values.shape)}")
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)).numpy()


def _blend(frame: Tensor, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    colours = plt.get_cmap("jet")(heat)[..., :3]
    return np.clip((1 - alpha) * to_image(frame) + alpha * colours, 0, 1)


def _per_image(values: Tensor, i: int) -> Tensor:
    item = values[i]
    return item[0] if item.dim() == 3 and item.shape[0] == 1 else item
