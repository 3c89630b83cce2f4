"""Choosing each input's map among candidate maps by what the model does with their tops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_borex._ranks import descending_ranks
from captum_borex.attr._objective import WindowObjective


def top_masks(maps: Tensor, fractions: Sequence[float]) -> Tensor:
    """Masks of each map's highest pixels (or voxels), ties broken by position as the
    deletion and insertion curves break them.

    Args:
        maps: ``(N, *spatial)`` maps.
        fractions: Fractions of the pixels to mark, each in (0, 1).

    Returns:
        ``(F, N, 1, *spatial)`` bool: for each fraction, the top ``round(f * n)`` pixels.
    """
    batch, spatial = maps.shape[0], maps.shape[1:]
    rank = descending_ranks(maps.flatten(1))
    counts = torch.tensor([round(f * rank.shape[1]) for f in fractions], device=maps.device)
    return (rank[None] < counts.view(-1, 1, 1)).view(len(fractions), batch, 1, *spatial)


def separations(
    objective: WindowObjective,
    maps: Tensor,
    deleted_at: Sequence[float],
    shown_at: Sequence[float],
) -> Tensor:
    """How well each map's top separates the target from the rest: ``s(top shown alone on
    the keep baselines)`` averaged over ``shown_at`` minus ``s(top set to the baselines)``
    averaged over ``deleted_at``.

    Args:
        objective: The run's window objective (inputs, baselines, target, model).
        maps: ``(K, N, *spatial)`` candidate maps of every input.
        deleted_at: Fractions of the pixels whose top is deleted, each in (0, 1).
        shown_at: Fractions of the pixels whose top is shown alone, each in (0, 1).

    Returns:
        ``(K, N)`` float64; costs ``K * (len(deleted_at) + len(shown_at))`` model
        evaluations per input.
    """
    n_maps, batch = maps.shape[:2]
    x = objective.inputs
    flat_maps = maps.flatten(0, 1)
    inputs = _tiled(x, n_maps)
    shown = torch.where(
        top_masks(flat_maps, shown_at), inputs, _tiled(objective.keep_baselines, n_maps)
    )
    deleted = torch.where(
        top_masks(flat_maps, deleted_at), _tiled(objective.baselines, n_maps), inputs
    )
    n_shown = len(shown_at) * n_maps * batch
    rows = torch.arange(batch, device=x.device).repeat(n_maps * (len(shown_at) + len(deleted_at)))
    scores = objective.scores(torch.cat([shown.flatten(0, 1), deleted.flatten(0, 1)]), rows)
    scores = scores.to(torch.float64)
    shown_scores = scores[:n_shown].view(len(shown_at), n_maps, batch).mean(0)
    deleted_scores = scores[n_shown:].view(len(deleted_at), n_maps, batch).mean(0)
    return shown_scores - deleted_scores


def _tiled(tensor: Tensor, times: int) -> Tensor:
    """``tensor`` repeated ``times`` along its first axis."""
    return tensor.repeat(times, *(1,) * (tensor.dim() - 1))


def checked_map(
    objective: WindowObjective,
    evidence: dict[str, Tensor],
    deleted_at: Sequence[float],
    shown_at: Sequence[float],
) -> tuple[Tensor, dict[str, Tensor]]:
    """Each input's map: the candidate whose top best separates the target (see
    :func:`separations`); the first candidate wins ties.

    Args:
        objective: The run's window objective.
        evidence: ``(N, *spatial)`` candidate maps by name.
        deleted_at: Fractions of the pixels whose top is deleted.
        shown_at: Fractions of the pixels whose top is shown alone.

    Returns:
        The ``(N, *spatial)`` chosen maps and each candidate's ``(N,)`` separation by name.
    """
    names = list(evidence)
    maps = torch.stack([evidence[name] for name in names])
    separation = separations(objective, maps, deleted_at, shown_at)
    choice = separation.argmax(0)
    chosen = maps[choice, torch.arange(maps.shape[1], device=maps.device)]
    return chosen, dict(zip(names, separation.unbind(0)))
