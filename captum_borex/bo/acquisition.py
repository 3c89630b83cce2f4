"""Choosing the next windows: upper confidence bound over a window grid."""

from __future__ import annotations

import torch
from torch import Tensor

#: Acquisition values closer than this count as tied; ties go to the most central window.
TIE_TOLERANCE = 1e-9


def upper_confidence_bound(mean: Tensor, variance: Tensor, kappa: float) -> Tensor:
    r"""UCB acquisition ``mean + kappa * sqrt(variance)``."""
    return mean + kappa * variance.clamp(min=0.0).sqrt()


def centrality_penalty(centres: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A tie-breaking penalty below :data:`TIE_TOLERANCE`, growing away from the centre.

    Adding it to acquisition values makes the choice among exactly tied windows (a flat
    prior, regions far from every observation) deterministic and central, without changing
    any choice between windows whose values differ by more than the tolerance.

    Args:
        centres: ``(m, D)`` window centres.
        shape: Length of each axis.
    """
    middle = (torch.tensor(shape, dtype=torch.float64, device=centres.device) - 1) / 2
    scale = middle.clamp(min=1.0)
    distance = (((centres.to(torch.float64) - middle) / scale) ** 2).sum(-1).sqrt()
    return TIE_TOLERANCE * distance / max(float(distance.max()), 1.0)


def best_index(values: Tensor, penalty: Tensor) -> Tensor:
    """Index of the best value in each row of ``values (N, m)``, ties broken by ``penalty``.

    Values are rounded to a hundredth of :data:`TIE_TOLERANCE` first, so that windows tied
    in exact arithmetic (mirror-image positions) stay tied whatever the rounding of the
    batched linear algebra, and an image's choice does not depend on its batch.
    """
    quantum = TIE_TOLERANCE / 100
    return (torch.round(values / quantum) * quantum - penalty).argmax(-1)
