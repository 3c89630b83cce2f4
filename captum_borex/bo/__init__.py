"""The BOREx search, free of Captum: windows, the window GP (both presets) and the field
model, acquisition, map rebuild."""

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
