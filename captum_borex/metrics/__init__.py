"""Measures of saliency maps: faithfulness (deletion, insertion) and localisation."""

from captum_borex.metrics._substrates import gaussian_blur
from captum_borex.metrics.faithfulness import (
    CausalCurves,
    causal_curves,
    deletion_auc,
    insertion_auc,
)
from captum_borex.metrics.localisation import energy_pointing_game, pointing_game

__all__ = [
    "CausalCurves",
    "causal_curves",
    "deletion_auc",
    "energy_pointing_game",
    "gaussian_blur",
    "insertion_auc",
    "pointing_game",
]
