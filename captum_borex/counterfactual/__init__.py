"""Counterfactuals confined to a saliency map's region (pixel attack, latent diffusion)."""

from captum_borex.counterfactual.explainer import CounterfactualResult, RegionCounterfactual
from captum_borex.counterfactual.latent import LatentDiffusionGenerator
from captum_borex.counterfactual.measures import (
    distances,
    flip_rate,
    knn_realism,
    region_change,
    target_confidence,
)
from captum_borex.counterfactual.region import saliency_maps, select_region

__all__ = [
    "CounterfactualResult",
    "LatentDiffusionGenerator",
    "RegionCounterfactual",
    "distances",
    "flip_rate",
    "knn_realism",
    "region_change",
    "saliency_maps",
    "select_region",
    "target_confidence",
]
