"""The BOREx optimiser, free of Captum: windows, GP surrogate, acquisition, map rebuild."""

from captum_borex.bo.optimizer import BOResult, BOSettings, optimise
from captum_borex.bo.windows import WindowGrid, WindowSpace

__all__ = ["BOResult", "BOSettings", "WindowGrid", "WindowSpace", "optimise"]
