"""Lightning lives in two namespaces: ``lightning.pytorch`` and ``pytorch_lightning``.

``lightning.pytorch`` is preferred when installed. Where both are installed, the callbacks
derive from the base classes of both, so a Trainer from either namespace accepts them (the
prediction loop recognises writers with ``isinstance``), and logger types are recognised in
both namespaces.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any


def _namespaces() -> tuple[ModuleType, ...]:
    found = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        root = name.split(".")[0]
        if importlib.util.find_spec(root) is None:
            continue
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    if not found:
        raise ImportError(
            "captum_borex.lightning needs Lightning: pip install lightning "
            "(or pip install pytorch-lightning)"
        )
    return tuple(found)


#: The importable Lightning namespaces, the preferred one first.
NAMESPACES = _namespaces()
#: The preferred namespace (``lightning.pytorch`` when installed).
pl = NAMESPACES[0]

CALLBACK_BASES: tuple[type, ...] = tuple(ns.Callback for ns in NAMESPACES)
WRITER_BASES: tuple[type, ...] = tuple(ns.callbacks.BasePredictionWriter for ns in NAMESPACES)


def _logger_classes(name: str) -> tuple[type, ...]:
    return tuple(getattr(ns.loggers, name) for ns in NAMESPACES if hasattr(ns.loggers, name))


TENSORBOARD_LOGGERS = _logger_classes("TensorBoardLogger")
CSV_LOGGERS = _logger_classes("CSVLogger")
WANDB_LOGGERS = _logger_classes("WandbLogger")
MLFLOW_LOGGERS = _logger_classes("MLFlowLogger")


def logger_kind(logger: Any) -> str:
    """ "tensorboard", "csv", "wandb", "mlflow" or "other" for a Lightning logger."""
    for kind, classes in (
        ("tensorboard", TENSORBOARD_LOGGERS),
        ("csv", CSV_LOGGERS),
        ("wandb", WANDB_LOGGERS),
        ("mlflow", MLFLOW_LOGGERS),
    ):
        if classes and isinstance(logger, classes):
            return kind
    return "other"


def rank_zero_warn(message: str) -> None:
    """Warn once, from global rank zero only (Lightning's own helper)."""
    pl.utilities.rank_zero.rank_zero_warn(message)
