"""captum_borex: trustworthy saliency maps for PyTorch vision models, on top of Captum."""

from captum_borex.attr import CAMERAS, RISE, BOREx, BORExDetails, rank_fusion

__version__ = "0.1.0"

__all__ = ["BOREx", "BORExDetails", "CAMERAS", "RISE", "__version__", "rank_fusion"]
