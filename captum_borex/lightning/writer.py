"""Explaining whole datasets with ``trainer.predict``, on one or many devices, resumably."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captum_borex.attr.settings import BORExSettings
from captum_borex.lightning._compat import WRITER_BASES
from captum_borex.lightning._explain import (
    BatchToInputs,
    ExplainOptions,
    PriorFactory,
    TargetMode,
    check_options,
    default_batch_to_inputs,
    explain,
    split_batch,
    to_module_input,
    undisturbed,
)
from captum_borex.lightning._logging import write_atomic

#: What a shard holds besides ``indices``; each is ``(n, *spatial)`` except ``targets (n,)``.
FIELDS = ("maps", "uncertainty", "prior", "targets")
META_FILE = "explanations.json"
_FORMAT = 2


class ExplanationWriter(*WRITER_BASES):  # type: ignore[misc]
    r"""Explain every sample of ``trainer.predict``'s data with BOREx, writing resumable shards.

    A :class:`BasePredictionWriter` (batch interval): after each predict batch it refines
    the prior's maps of the batch's inputs with :class:`~captum_borex.BOREx` and writes one
    shard file per batch and rank to ``output_dir``. On many devices (e.g.
    ``strategy="ddp"``) Lightning's own machinery splits the data between ranks and tracks
    each sample's dataset index; :func:`load_explanations` gathers the shards and keeps
    every dataset index once (a ``DistributedSampler`` of your own pads the data with
    repeated samples: those are dropped).

    Resuming: a shard is written atomically (temporary file, then rename), and a batch whose
    shard already exists and holds the same dataset indices is skipped, so rerunning an
    interrupted ``trainer.predict`` with the same data, batch size and devices only
    computes the missing shards (the module's ``predict_step`` still runs on skipped
    batches; BOREx does not). ``output_dir/explanations.json`` records the settings; a
    rerun with different settings raises instead of mixing maps.

    With the default ``seed=0`` an image's map depends neither on its batch nor on the
    number of devices (up to floating-point rounding). Shards hold ``indices``, ``maps``
    (the refined maps), ``uncertainty``, ``prior`` (the normalised prior) and ``targets``.
    Pass ``return_predictions=False`` to ``trainer.predict`` so predictions are not also
    kept in memory.

    Args:
        output_dir: Directory of the shards (created if missing).
        prior: A callable taking the LightningModule and returning the Captum attribution
            to refine, e.g. ``lambda m: LayerGradCam(m, m.backbone[-1])``; None for a flat
            prior. Default: None
        target: "label": the batch's labels when it has them, else the model's predicted
            class; "prediction": always the predicted class. Default: "label"
        batch_to_inputs: Turns a batch into ``(inputs, labels or None)``; None takes
            ``(batch[0], batch[1])`` from tuples and lists and ``(batch, None)`` from a
            tensor. Default: None
        settings: BOREx's settings: a preset name ("default", "published") or a
            :class:`~captum_borex.BORExSettings`. Default: "default"
        n_iter: BOREx rounds per batch. Default: 50
        window_sizes: Window half-sizes in pixels; None scales the published ones to the
            image size. Default: None
        baselines: What occluded pixels become, in the model's input space. Default: 0.0
        prior_kwargs: Keyword arguments of the prior's ``attribute``. Default: None
        internal_batch_size: Largest batch BOREx gives the model at once. Default: None
        seed: Seed of every batch's explanation; None draws one. Default: 0

    Attributes:
        written: Shards computed and written by the last ``predict`` on this rank.
        skipped: Shards found complete and skipped by the last ``predict`` on this rank.

    Raises:
        TypeError, ValueError: an invalid argument (checked here).

    Examples::

        >>> writer = ExplanationWriter("explanations/", prior=lambda m: LayerGradCam(m, m.layer4),
        ...                            settings="default", n_iter=50)
        >>> trainer = Trainer(accelerator="gpu", devices=4, strategy="ddp", callbacks=[writer])
        >>> trainer.predict(model, dataloaders=loader, return_predictions=False)
        >>> indices, maps = load_explanations("explanations/")
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        prior: PriorFactory | None = None,
        target: TargetMode = "label",
        batch_to_inputs: BatchToInputs | None = None,
        settings: str | BORExSettings = "default",
        n_iter: int = 50,
        window_sizes: Sequence[int] | None = None,
        baselines: float = 0.0,
        prior_kwargs: dict[str, Any] | None = None,
        internal_batch_size: int | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(write_interval="batch")
        if not isinstance(output_dir, (str, os.PathLike)):
            raise TypeError(f"output_dir must be a path, got {type(output_dir).__name__}")
        self.borex_settings = check_options(prior, target, batch_to_inputs, settings)
        self.options = ExplainOptions(
            n_iter=n_iter,
            window_sizes=window_sizes,
            baselines=baselines,
            prior_kwargs=prior_kwargs,
            internal_batch_size=internal_batch_size,
            seed=seed,
        )
        self.output_dir = Path(output_dir)
        self.prior = prior
        self.target = target
        self.batch_to_inputs = batch_to_inputs or default_batch_to_inputs
        self.written: list[Path] = []
        self.skipped: list[Path] = []

    def recorded_settings(self) -> dict[str, Any]:
        """The settings recorded in ``explanations.json`` (a rerun must match them)."""
        return {
            "format": _FORMAT,
            "target": self.target,
            "prior": None if self.prior is None else _name(self.prior),
            "borex_settings": _jsonable(dataclasses.asdict(self.borex_settings)),
            "options": _jsonable(self.options.as_kwargs()),
        }

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        self.written, self.skipped = [], []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        meta = self.output_dir / META_FILE
        settings = self.recorded_settings()
        if meta.exists():
            recorded = json.loads(meta.read_text())
            if recorded != settings:
                raise ValueError(
                    f"{self.output_dir} holds explanations made with other settings "
                    f"({recorded}) than now ({settings}); use a new output_dir or delete it"
                )
        elif trainer.is_global_zero:
            write_atomic(meta, (json.dumps(settings, indent=2) + "\n").encode())

    def shard_path(self, rank: int, dataloader_idx: int, batch_idx: int) -> Path:
        """Where the shard of one batch of one rank is written."""
        return self.output_dir / f"shard-dl{dataloader_idx}-rank{rank:03d}-batch{batch_idx:06d}.pt"

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not batch_indices:
            raise RuntimeError(
                "ExplanationWriter needs the dataset index of every sample: predict with a "
                "torch DataLoader over a map-style Dataset (Lightning then tracks the indices)"
            )
        indices = torch.as_tensor(list(batch_indices), dtype=torch.long)
        path = self.shard_path(trainer.global_rank, dataloader_idx, batch_idx)
        if _holds(path, indices):
            self.skipped.append(path)
            return
        inputs, labels = split_batch(self.batch_to_inputs, batch)
        if inputs.shape[0] != len(indices):
            raise ValueError(
                f"batch {batch_idx} has {inputs.shape[0]} inputs but {len(indices)} dataset "
                "indices; batch_to_inputs must return the whole batch"
            )
        with undisturbed(trainer, pl_module, self.options.seed):
            x = to_module_input(trainer, pl_module, inputs)
            details, targets = explain(
                pl_module, x, labels, self.prior, self.target, self.borex_settings, self.options
            )
        refined = details.attributions
        shard = {
            "indices": indices,
            "maps": refined[:, 0].detach().float().cpu().contiguous(),
            "uncertainty": details.uncertainty.detach().float().cpu().contiguous(),
            "prior": details.prior.detach().float().cpu().contiguous(),
            "targets": targets.detach().long().cpu(),
        }
        buffer = io.BytesIO()
        torch.save(shard, buffer)
        write_atomic(path, buffer.getvalue())
        self.written.append(path)


def load_explanations(
    output_dir: str | os.PathLike[str], dataloader_idx: int = 0, field: str = "maps"
) -> tuple[Tensor, Tensor]:
    """Gather the shards an :class:`ExplanationWriter` wrote: every dataset index once.

    Args:
        output_dir: The writer's ``output_dir``.
        dataloader_idx: Which predict dataloader's explanations to read. Default: 0
        field: What to return with the indices: "maps" (refined maps), "uncertainty",
            "prior" (the normalised prior) or "targets" (the classes explained).
            Default: "maps"

    Returns:
        ``indices (n,)`` sorted dataset indices, each once (the duplicates a
        ``DistributedSampler`` pads with are dropped), and the ``field`` of each,
        ``(n, H, W)`` (``(n,)`` for "targets").

    Raises:
        FileNotFoundError: no shard for ``dataloader_idx`` in ``output_dir``.
        ValueError: an unknown ``field``.

    Examples::

        >>> indices, maps = load_explanations("explanations/")
        >>> maps[indices == 7]  # the refined map of dataset item 7
    """
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    paths = sorted(Path(output_dir).glob(f"shard-dl{dataloader_idx}-*.pt"))
    if not paths:
        raise FileNotFoundError(
            f"no explanation shards for dataloader {dataloader_idx} in {output_dir}"
        )
    shards = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    indices = torch.cat([s["indices"] for s in shards])
    values = torch.cat([s[field] for s in shards])
    order = torch.argsort(indices, stable=True)
    indices, values = indices[order], values[order]
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    return indices[first], values[first]


def _holds(path: Path, indices: Tensor) -> bool:
    """Whether ``path`` is a readable shard of exactly these dataset indices."""
    if not path.exists():
        return False
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["indices"]
    except Exception:
        return False
    return torch.equal(stored, indices)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Tensor):
        if value.numel() <= 16:
            return value.tolist()
        return {
            "tensor": list(value.shape),
            "dtype": str(value.dtype),
            "sum": float(value.detach().double().sum()),
        }
    return _name(value)


def _name(obj: Any) -> str:
    """A stable name for a callable or object (no memory addresses)."""
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{getattr(obj, '__module__', None) or type(obj).__module__}.{qualname}"
