"""Lightning integration: refined explanations logged while training, whole-dataset writers.

- :class:`BORExCallback` refines and logs explanations of fixed validation samples every
  few epochs (TensorBoard, W&B, MLflow, PNG files), with deletion / insertion AUC.
- :class:`ExplanationWriter` explains every sample of ``trainer.predict`` on one or many
  devices, writing resumable shards; :func:`load_explanations` reads them back.

Works with ``lightning.pytorch`` (preferred when installed) and ``pytorch_lightning``.
"""

from captum_borex.lightning.callback import BORExCallback
from captum_borex.lightning.writer import ExplanationWriter, load_explanations

__all__ = ["BORExCallback", "ExplanationWriter", "load_explanations"]
