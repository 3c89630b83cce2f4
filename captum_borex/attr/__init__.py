"""Captum-facing attribution methods."""

from captum_borex.attr.borex import BOREx, BORExDetails
from captum_borex.attr.cameras import CAMERAS
from captum_borex.attr.fusion import rank_fusion
from captum_borex.attr.rise import RISE
from captum_borex.attr.settings import PRESETS, BORExSettings

__all__ = ["BOREx", "BORExDetails", "BORExSettings", "CAMERAS", "PRESETS", "RISE", "rank_fusion"]
