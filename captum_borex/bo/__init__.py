"""The BOREx search, free of Captum: windows, the field model (default) and the published
window GP, acquisition, map rebuild."""

from captum_borex.bo.field import FieldResult, FieldSettings, refine_field
from captum_borex.bo.optimizer import BOResult, BOSettings, optimise
from captum_borex.bo.windows import WindowGrid, WindowSpace

__all__ = [
    "BOResult",
    "BOSettings",
    "FieldResult",
    "FieldSettings",
    "WindowGrid",
    "WindowSpace",
    "optimise",
    "refine_field",
]
