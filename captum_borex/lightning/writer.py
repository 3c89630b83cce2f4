"""Explaining whole datasets with ``trainer.predict``, on one or many devices, resumably."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
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
    build_prior,
    check_options,
    default_batch_to_inputs,
    explain,
    split_batch,
    to_module_input,
    undisturbed,
)
from captum_borex.lightning._fingerprint import (
    attribution_identity,
    callable_identity,
    model_digest,
    sample_digests,
)
from captum_borex.lightning._logging import write_atomic

#: What a shard holds besides ``indices`` and ``digests``; each is ``(n, *spatial)`` except
#: ``targets (n,)``.
FIELDS = ("maps", "uncertainty", "prior", "targets")
#: The maps of a shard, which must be finite.
_MAPS = ("maps", "uncertainty", "prior")
META_FILE = "explanations.json"
#: Written by each rank when its predict ends: the shards of that run.
DONE_FILE = "complete-rank{rank:03d}.json"
_FORMAT = 3
#: How close the maps of a sample explained twice (a padding sampler) must be.
_DUPLICATE_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


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
    shard already exists, is valid and holds the same samples (dataset indices and a digest
    of each input and label) is skipped, so rerunning an interrupted ``trainer.predict``
    with the same data, batch size and devices only computes the missing shards (the
    module's ``predict_step`` still runs on skipped batches; BOREx does not); a shard of
    other data is recomputed. ``output_dir/explanations.json`` records what every shard
    depends on: the settings, a digest of the module's weights and the prior (its
    function -- a lambda's source, or ``prior_name`` -- and the attribution it builds:
    class, layer path, arguments). A rerun with other weights, another prior or other
    settings raises, naming the folder and the reason, instead of reusing or mixing maps.

    Completeness: when ``trainer.predict`` ends, each rank records its shards and waits for
    the others (a barrier), so :func:`load_explanations` right after ``trainer.predict`` sees
    every shard on every rank, and refuses a run that did not finish unless asked
    (``allow_partial=True``).

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
        prior_name: A name identifying ``prior`` in ``explanations.json`` (e.g. "gradcam
            layer4 v2"); None records a function's qualified name, or a lambda's source.
            Default: None

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
        prior_name: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        if prior_name is not None and not isinstance(prior_name, str):
            raise TypeError(f"prior_name must be a str or None, got {type(prior_name).__name__}")
        self.prior_name = prior_name
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
            "prior": None if self.prior is None else callable_identity(self.prior, self.prior_name),
            "borex_settings": _jsonable(dataclasses.asdict(self.borex_settings)),
            # What the settings build the map from (their meaning can change between
            # versions while the settings' values stay the same).
            "map_sources": _jsonable(self.borex_settings.sources(self.prior is not None)),
            "options": _jsonable(self.options.as_kwargs()),
        }

    def fingerprint(self, pl_module: Any) -> dict[str, Any]:
        """What the shards depend on besides their data: :meth:`recorded_settings`, a digest
        of the module's weights, and the attribution the prior builds (class, layer path,
        arguments)."""
        attribution = None
        if self.prior is not None:
            attribution = _jsonable(
                attribution_identity(build_prior(self.prior, pl_module), pl_module)
            )
        return {
            **self.recorded_settings(),
            "model_weights": model_digest(pl_module),
            "prior_attribution": attribution,
        }

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        self.written, self.skipped = [], []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        meta = self.output_dir / META_FILE
        now = self.fingerprint(pl_module)
        if meta.exists():
            reason = _mismatch(json.loads(meta.read_text()), now)
            if reason:
                raise ValueError(
                    f"{self.output_dir} holds explanations made with {reason}; its shards "
                    "cannot be reused: use a new output_dir, or delete this one to recompute"
                )
        if trainer.is_global_zero:
            if not meta.exists():
                write_atomic(meta, (json.dumps(now, indent=2) + "\n").encode())
            for done in self.output_dir.glob(DONE_FILE.replace("{rank:03d}", "*")):
                done.unlink()  # this run is complete only once every rank says so again
        trainer.strategy.barrier("ExplanationWriter.setup")

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
        inputs, labels = split_batch(self.batch_to_inputs, batch)
        if inputs.shape[0] != len(indices):
            raise ValueError(
                f"batch {batch_idx} has {inputs.shape[0]} inputs but {len(indices)} dataset "
                "indices; batch_to_inputs must return the whole batch"
            )
        digests = sample_digests(inputs, labels)
        if _holds(path, indices, digests):
            self.skipped.append(path)
            return
        with undisturbed(trainer, pl_module, self.options.seed):
            x = to_module_input(trainer, pl_module, inputs)
            details, targets = explain(
                pl_module, x, labels, self.prior, self.target, self.borex_settings, self.options
            )
        shard = {
            "indices": indices,
            "digests": digests,
            "maps": details.attributions[:, 0].detach().float().cpu().contiguous(),
            "uncertainty": details.uncertainty.detach().float().cpu().contiguous(),
            "prior": details.prior.detach().float().cpu().contiguous(),
            "targets": targets.detach().long().cpu(),
        }
        buffer = io.BytesIO()
        torch.save(shard, buffer)
        write_atomic(path, buffer.getvalue())
        self.written.append(path)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Record this rank's shards as complete, then wait for every rank, so that
        :func:`load_explanations` right after ``trainer.predict`` sees all of them."""
        record = {
            "world_size": trainer.world_size,
            "shards": sorted(p.name for p in [*self.written, *self.skipped]),
        }
        done = self.output_dir / DONE_FILE.format(rank=trainer.global_rank)
        write_atomic(done, (json.dumps(record, indent=2) + "\n").encode())
        trainer.strategy.barrier("ExplanationWriter.on_predict_end")


def load_explanations(
    output_dir: str | os.PathLike[str],
    dataloader_idx: int = 0,
    field: str = "maps",
    allow_partial: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gather the shards an :class:`ExplanationWriter` wrote: every dataset index once.

    Only the shards of the last complete ``trainer.predict`` are read (every rank records
    its shards when it finishes). Each shard is checked (keys, shapes, finite maps), and a
    dataset index explained twice (a padding ``DistributedSampler``) must agree.

    Args:
        output_dir: The writer's ``output_dir``.
        dataloader_idx: Which predict dataloader's explanations to read. Default: 0
        field: What to return with the indices: "maps" (refined maps), "uncertainty",
            "prior" (the normalised prior) or "targets" (the classes explained).
            Default: "maps"
        allow_partial: Read the shards of an interrupted (or still running) predict too,
            with a warning, instead of raising. Default: False

    Returns:
        ``indices (n,)`` sorted dataset indices, each once (the duplicates a
        ``DistributedSampler`` pads with are dropped), and the ``field`` of each,
        ``(n, H, W)`` (``(n,)`` for "targets").

    Raises:
        FileNotFoundError: no shard for ``dataloader_idx`` in ``output_dir``.
        ValueError: an unknown ``field``; an incomplete run without ``allow_partial``; a
            shard that cannot be read or holds bad values (named); one dataset index
            with two different explanations.

    Examples::

        >>> trainer.predict(model, loader, return_predictions=False)
        >>> indices, maps = load_explanations("explanations/")
        >>> maps[indices == 7]  # the refined map of dataset item 7
    """
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    if not isinstance(allow_partial, bool):
        raise TypeError(f"allow_partial must be a bool, got {type(allow_partial).__name__}")
    output_dir = Path(output_dir)
    paths = _shard_paths(output_dir, dataloader_idx, allow_partial)
    shards = [_read_shard(p) for p in paths]
    _check_spatial(shards, paths)
    indices = torch.cat([s["indices"] for s in shards])
    values = torch.cat([s[field] for s in shards])
    order = torch.argsort(indices, stable=True)
    indices, values = indices[order], values[order]
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    if not bool(first.all()):
        _check_duplicates(shards, paths, order, first)
    return indices[first], values[first]


def _shard_paths(output_dir: Path, dataloader_idx: int, allow_partial: bool) -> list[Path]:
    """The shards of ``dataloader_idx`` of the last complete run (any, if partial)."""
    prefix = f"shard-dl{dataloader_idx}-"
    present = sorted(output_dir.glob(f"{prefix}*.pt"))
    if not present:
        raise FileNotFoundError(
            f"no explanation shards for dataloader {dataloader_idx} in {output_dir}"
        )
    listed, missing = _completed_shards(output_dir)
    if not missing:
        paths = [output_dir / name for name in listed if name.startswith(prefix)]
        lost = [p.name for p in paths if not p.exists()]
        if lost:
            raise ValueError(f"{output_dir}: shards of the last run are missing: {lost}")
        return paths
    message = (
        f"{output_dir} holds an incomplete run: {missing}; rerun trainer.predict with the "
        "same writer to complete it"
    )
    if not allow_partial:
        raise ValueError(message + ", or pass allow_partial=True to read what is there")
    warnings.warn(message + "; reading the shards there are (allow_partial=True)", stacklevel=3)
    return present


def _completed_shards(output_dir: Path) -> tuple[list[str], str]:
    """The shard names every rank recorded when its predict ended, and what is missing
    (an empty string when every rank finished)."""
    records = {}
    for path in output_dir.glob(DONE_FILE.replace("{rank:03d}", "*")):
        try:
            records[int(path.stem.rsplit("rank", 1)[1])] = json.loads(path.read_text())
        except (ValueError, OSError):
            return [], f"the record {path.name} cannot be read"
    if not records:
        return [], "no rank finished trainer.predict (interrupted, or still running)"
    world_size = records[min(records)]["world_size"]
    unfinished = sorted(set(range(world_size)) - set(records))
    if unfinished or any(r["world_size"] != world_size for r in records.values()):
        return [], f"ranks {unfinished} of {world_size} did not finish trainer.predict"
    return [name for r in records.values() for name in r["shards"]], ""


def _read_shard(path: Path) -> dict[str, Tensor]:
    """A shard, checked: its keys, shapes and finite maps; a ValueError names a bad one."""
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"explanation shard {path} cannot be read ({type(err).__name__}): it is "
            "truncated or not a shard; delete it and rerun trainer.predict with the same "
            "writer to recompute it"
        ) from None
    problem = _shard_problem(shard)
    if problem:
        raise ValueError(
            f"explanation shard {path} is not valid: {problem}; delete it and rerun "
            "trainer.predict with the same writer to recompute it"
        )
    return shard


def _shard_problem(shard: Any) -> str:
    """What is wrong with a loaded shard, or an empty string."""
    keys = ("indices", "digests", *FIELDS)
    if not isinstance(shard, dict) or any(not isinstance(shard.get(k), Tensor) for k in keys):
        found = sorted(shard) if isinstance(shard, dict) else type(shard).__name__
        return f"it must hold the tensors {keys}, found {found}"
    n = shard["indices"].shape[0]
    if shard["indices"].dim() != 1 or n == 0:
        return f"indices of shape {tuple(shard['indices'].shape)}"
    for key in ("digests", "targets", *_MAPS):
        if shard[key].shape[:1] != (n,) or (key in _MAPS and shard[key].dim() < 3):
            return f"{key} of shape {tuple(shard[key].shape)} for {n} indices"
        if key in _MAPS and not bool(torch.isfinite(shard[key]).all()):
            return f"{key} holds NaN or Inf values"
    if not shard["maps"].shape == shard["uncertainty"].shape == shard["prior"].shape:
        return "maps, uncertainty and prior of different shapes"
    return ""


def _check_spatial(shards: list[dict[str, Tensor]], paths: list[Path]) -> None:
    """All shards hold maps of one size."""
    sizes = {tuple(s["maps"].shape[1:]): p for s, p in zip(shards, paths)}
    if len(sizes) > 1:
        raise ValueError(f"explanation shards hold maps of different sizes: {sizes}")


def _check_duplicates(
    shards: list[dict[str, Tensor]], paths: list[Path], order: Tensor, first: Tensor
) -> None:
    """A dataset index explained twice must have the same input and (nearly) the same map."""

    def gathered(key: str) -> Tensor:
        return torch.cat([s[key] for s in shards])[order]

    source = torch.cat([torch.full((len(s["indices"]),), i) for i, s in enumerate(shards)])
    source, indices, digests, maps = source[order], *map(gathered, ("indices", "digests", "maps"))
    kept = first.nonzero().flatten()[torch.cumsum(first.long(), 0) - 1]  # each row's first
    for j in (~first).nonzero().flatten().tolist():
        i = int(kept[j])
        same = digests[i] == digests[j] and torch.allclose(maps[i], maps[j], **_DUPLICATE_TOLERANCE)
        if not same:
            index = int(indices[j])
            raise ValueError(
                f"dataset index {index} has two different explanations, in "
                f"{paths[int(source[i])].name} and {paths[int(source[j])].name}: the shards "
                "come from different data or runs; delete the folder and rerun trainer.predict"
            )


def _holds(path: Path, indices: Tensor, digests: Tensor) -> bool:
    """Whether ``path`` is a valid shard of exactly these samples (indices and data)."""
    if not path.exists():
        return False
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    if _shard_problem(shard):
        return False
    return torch.equal(shard["indices"], indices) and torch.equal(shard["digests"], digests)


def _mismatch(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """Why explanations recorded with ``recorded`` cannot be reused now ('' if they can)."""
    if recorded.get("format") != now["format"]:
        return f"another version of this writer (format {recorded.get('format')})"
    if recorded.get("model_weights") != now["model_weights"]:
        return "other model weights (retrained or another checkpoint)"
    for key in ("prior", "prior_attribution"):
        if recorded.get(key) != now[key]:
            return f"another prior ({recorded.get(key)!r}, now {now[key]!r})"
    changed = sorted(k for k in now if recorded.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {recorded.get(k)!r} -> {now[k]!r}" for k in changed)
        return f"other settings ({details})"
    return ""


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
    return callable_identity(value)
