"""Measures of saliency maps: faithfulness, localisation, salience, time, refinement reports."""

from captum_borex._substrates import gaussian_blur
from captum_borex.metrics.faithfulness import (
    CausalCurves,
    causal_curves,
    deletion_auc,
    insertion_auc,
)
from captum_borex.metrics.localisation import energy_pointing_game, pointing_game
from captum_borex.metrics.report import (
    PairedComparison,
    RefinementReport,
    paired_comparison,
    refinement_report,
)
from captum_borex.metrics.salience import (
    CrossModelStability,
    GuidedDegradation,
    OutOfSetShift,
    SalienceEntropy,
    TransformConsistency,
    cross_model_stability,
    guided_blur,
    guided_degradation,
    map_spearman,
    map_ssim,
    out_of_set_shift,
    salience_entropy,
    salt_and_pepper,
    transform_consistency,
)
from captum_borex.metrics.segmentation import SegmentationCurves, segmentation_curves
from captum_borex.metrics.temporal import frame_profile

__all__ = [
    "CausalCurves",
    "CrossModelStability",
    "GuidedDegradation",
    "OutOfSetShift",
    "PairedComparison",
    "RefinementReport",
    "SalienceEntropy",
    "SegmentationCurves",
    "TransformConsistency",
    "causal_curves",
    "cross_model_stability",
    "deletion_auc",
    "energy_pointing_game",
    "frame_profile",
    "gaussian_blur",
    "guided_blur",
    "guided_degradation",
    "insertion_auc",
    "map_spearman",
    "map_ssim",
    "out_of_set_shift",
    "paired_comparison",
    "pointing_game",
    "refinement_report",
    "salience_entropy",
    "salt_and_pepper",
    "segmentation_curves",
    "transform_consistency",
]
