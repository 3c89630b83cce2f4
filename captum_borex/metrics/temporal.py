"""Which frames matter: saliency over time for clips."""

from __future__ import annotations

import torch
from torch import Tensor


def frame_profile(attributions: Tensor, relative_to_minimum: bool = True) -> Tensor:
    """Share of each frame in a clip's saliency: ``(N, T)``, each row summing to 1.

    Saliency maps often carry an offset (a prior's mean, a GP's baseline) that would make
    every frame look equally important, so by default each clip's minimum is subtracted
    first: a frame's share is its saliency above the clip's least salient voxel.

    Args:
        attributions: ``(N, C, T, H, W)`` (channels summed), ``(N, 1, T, H, W)`` or
            ``(N, T, H, W)`` clip maps.
        relative_to_minimum: Measure saliency above each clip's minimum; False clips
            negative values to 0 instead. Default: True

    Returns:
        ``(N, T)`` saliency share per frame (uniform for a constant map).

    Examples::

        >>> profile = frame_profile(borex.attribute(clips, target=labels))
        >>> profile.argmax(1)  # the most important frame of each clip
    """
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if not isinstance(attributions, Tensor):
        raise TypeError(f"attributions must be a tensor, got {type(attributions).__name__}")
    if attributions.dim() == 5:
        attributions = attributions.sum(1)
    if attributions.dim() != 4:
        raise ValueError(
            "attributions must be clip maps (N, C, T, H, W), (N, 1, T, H, W) or (N, T, H, W), "
            f"got shape {tuple(attributions.shape)}"
        )
    values = attributions.to(torch.float64)
    if relative_to_minimum:
        mass = values - values.flatten(1).amin(1).view(-1, 1, 1, 1)
    else:
        mass = values.clamp(min=0)
    per_frame = mass.sum(dim=(-2, -1))
    total = per_frame.sum(1, keepdim=True)
    uniform = torch.full_like(per_frame, 1.0 / per_frame.shape[1])
    share = torch.where(total > 0, per_frame / total.clamp(min=1e-300), uniform)
    return share.to(attributions.dtype)
