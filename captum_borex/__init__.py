"""captum_borex: trustworthy saliency maps for PyTorch vision models, on top of Captum."""

from captum_borex.attr import (
    CAMERAS,
    PRESETS,
    RISE,
    BOREx,
    BORExDetails,
    BORExSettings,
    rank_fusion,
)

__version__ = "0.1.0"

__all__ = [
    "BOREx",
    "BORExDetails",
    "BORExSettings",
    "CAMERAS",
    "PRESETS",
    "RISE",
    "__version__",
    "rank_fusion",
]
