"""A Lightning callback that refines and logs explanations of fixed samples while training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captum_borex._checks import check_int, format_inputs
from captum_borex._state import forked_rng
from captum_borex.attr.borex import BORExDetails
from captum_borex.attr.settings import BORExSettings
from captum_borex.lightning._compat import CALLBACK_BASES, rank_zero_warn
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
from captum_borex.lightning._logging import log_image, needs_png, render, shows_images
from captum_borex.metrics.faithfulness import deletion_auc, insertion_auc
from captum_borex.viz import explanation_figure

#: Metric-name prefix and image tag of each stage.
_PREFIX = {"validation": "borex", "test": "borex_test"}


class _Samples:
    """The first ``capacity`` samples seen in one epoch, on the CPU; ``closed`` once that
    epoch ends, so later epochs neither add samples nor repeat them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.inputs: list[Tensor] = []
        self.labels: list[Tensor | None] = []
        self.closed = False

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.inputs)

    @property
    def full(self) -> bool:
        return self.closed or self.count >= self.capacity

    def add(self, inputs: Tensor, labels: Tensor | None) -> None:
        k = min(self.capacity - self.count, inputs.shape[0])
        # A copy, made out of inference mode so it stays usable for gradients later.
        with torch.inference_mode(False):
            self.inputs.append(inputs[:k].detach().cpu().clone())
            self.labels.append(None if labels is None else labels[:k].detach().cpu().clone())

    def tensors(self) -> tuple[Tensor, Tensor | None]:
        inputs = torch.cat(self.inputs)
        if any(lab is None for lab in self.labels):
            return inputs, None
        return inputs, torch.cat(self.labels)  # type: ignore[arg-type]

    def set(self, inputs: Tensor | None, labels: Tensor | None) -> None:
        self.inputs = [] if inputs is None else [inputs[: self.capacity]]
        self.labels = [] if inputs is None else [None if labels is None else labels[: len(inputs)]]
        self.closed = inputs is not None


class BORExCallback(*CALLBACK_BASES):  # type: ignore[misc]
    r"""Refine explanations of fixed validation samples with BOREx and log them while training.

    The callback keeps the first ``num_samples`` validation samples it sees (the sanity
    check excluded) and, at the end of every ``every_n_epochs``-th validation epoch,
    refines the prior's maps of those samples with :class:`~captum_borex.BOREx`. It logs a
    figure (input, prior overlay, refined overlay, uncertainty, one row per sample) and the
    mean deletion / insertion AUC of the prior and the refined maps, so faithfulness can be
    watched epoch by epoch. The samples are part of the callback's ``state_dict``: a run
    resumed from a checkpoint tracks the same images. ``trainer.validate`` and
    ``trainer.test`` explain too (the test stage tracks the first test samples).

    Images go to every logger the Trainer has: TensorBoard (``add_image``), Weights &
    Biases (``log_image``), MLflow (an artifact under ``borex/explanations``), and as PNG
    files ``<trainer.log_dir>/borex/epoch_{epoch:03d}.png`` when there is no logger, a
    ``CSVLogger`` or a logger of another kind. Scalars are logged through
    ``LightningModule.log`` so every logger receives them and callbacks such as
    ``EarlyStopping`` can monitor them:

    - ``borex/deletion_auc_prior``, ``borex/deletion_auc_refined`` (lower is better),
    - ``borex/insertion_auc_prior``, ``borex/insertion_auc_refined`` (higher is better),

    (``borex_test/...`` in the test stage; the prior's are left out with ``prior=None``).

    Training is not disturbed: the explanation runs with forked random number generators,
    out of inference mode, with the module in eval mode (every submodule's mode restored
    after), no ``.grad`` writes and no buffer updates, inside the Trainer's precision
    context. Two runs with the same seed give bit-identical weights with and without the
    callback. Under DDP the samples are explained and logged on global rank zero; the other
    ranks only take part in the collective calls.

    Args:
        prior: A callable taking the LightningModule and returning the Captum attribution
            to refine, e.g. ``lambda m: LayerGradCam(m, m.backbone[-1])``; None refines a
            flat prior (plain Bayesian-optimisation saliency). Called at every
            explanation. Default: None
        num_samples: Number of validation samples to track. Default: 8
        every_n_epochs: Explain at the end of every this many training epochs' validation.
            Default: 1
        n_iter: BOREx rounds per explanation (two forward passes per sample each).
            Default: 20
        window_sizes: BOREx window half-sizes in pixels; None scales the published ones
            to the image size. Default: None
        target: Which class to explain: "label" (the batch's labels, or the model's
            prediction when the batch has none) or "prediction" (the model's predicted
            class at that epoch). Default: "label"
        log_metrics: Compute and log deletion / insertion AUC of the prior and refined
            maps. Default: True
        metric_steps: Steps of the deletion and insertion curves (each curve costs
            ``num_samples * (metric_steps + 1)`` forward passes; 20 is plenty to follow a
            trend, use 100 for the published measure). Default: 20
        save_png: Write PNG files under ``trainer.log_dir``: True always, False never,
            None when there is no logger, or a CSVLogger or a logger of a kind that takes
            no images here (TensorBoard, W&B and MLflow alone get no PNG files).
            Default: None
        batch_to_inputs: Turns a batch into ``(inputs, labels or None)``; None takes
            ``(batch[0], batch[1])`` from tuples and lists and ``(batch, None)`` from a
            tensor. Default: None
        settings: BOREx's settings: a preset name ("default", "published") or a
            :class:`~captum_borex.BORExSettings`. Default: "default"
        baselines: What occluded pixels become, in the model's input space (for inputs
            normalised with a mean and std, 0 is the mean colour). Default: 0.0
        prior_kwargs: Keyword arguments of the prior's ``attribute``. Default: None
        internal_batch_size: Largest batch BOREx gives the model at once. Default: None
        seed: Seed of the explanation (BOREx and a random prior); the training RNG is
            forked, never advanced. Default: 0
        dataloader_idx: Which validation / test dataloader to take samples from.
            Default: 0

    Attributes:
        last_explanation: The :class:`~captum_borex.BORExDetails` of the last explanation
            on this rank (CPU tensors), or None.

    Raises:
        TypeError, ValueError: an invalid argument (checked here, before training).

    Examples::

        >>> from captum.attr import LayerGradCam
        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> callback = BORExCallback(
        ...     prior=lambda module: LayerGradCam(module, module.backbone[-1]),
        ...     num_samples=8,
        ...     n_iter=20,
        ... )
        >>> trainer = Trainer(callbacks=[callback], logger=TensorBoardLogger("logs"))
        >>> trainer.fit(model, train_loader, val_loader)  # then: tensorboard --logdir logs
    """

    def __init__(
        self,
        prior: PriorFactory | None = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        n_iter: int = 20,
        window_sizes: Sequence[int] | None = None,
        target: TargetMode = "label",
        log_metrics: bool = True,
        metric_steps: int = 20,
        save_png: bool | None = None,
        batch_to_inputs: BatchToInputs | None = None,
        settings: str | BORExSettings = "default",
        baselines: float = 0.0,
        prior_kwargs: dict[str, Any] | None = None,
        internal_batch_size: int | None = None,
        seed: int = 0,
        dataloader_idx: int = 0,
    ) -> None:
        self.settings = check_options(prior, target, batch_to_inputs, settings)
        self.options = ExplainOptions(
            n_iter=n_iter,
            window_sizes=window_sizes,
            baselines=baselines,
            prior_kwargs=prior_kwargs,
            internal_batch_size=internal_batch_size,
            seed=check_int(seed, "seed", minimum=0),
        )
        self.prior = prior
        self.num_samples = check_int(num_samples, "num_samples")
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs")
        self.target = target
        if not isinstance(log_metrics, bool):
            raise TypeError(f"log_metrics must be a bool, got {type(log_metrics).__name__}")
        self.log_metrics = log_metrics
        self.metric_steps = check_int(metric_steps, "metric_steps")
        if save_png is not None and not isinstance(save_png, bool):
            raise TypeError(f"save_png must be a bool or None, got {type(save_png).__name__}")
        self.save_png = save_png
        self.batch_to_inputs = batch_to_inputs or default_batch_to_inputs
        self.dataloader_idx = check_int(dataloader_idx, "dataloader_idx", minimum=0)
        self._samples = {
            "validation": _Samples(self.num_samples),
            "test": _Samples(self.num_samples),
        }
        self._warned_empty = False
        self._checked = False
        #: The last explanation computed on this rank (on the CPU), or None.
        self.last_explanation: BORExDetails | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            num_samples=self.num_samples, dataloader_idx=self.dataloader_idx
        )

    def state_dict(self) -> dict[str, Any]:
        """The tracked validation samples (CPU tensors), so a resumed run explains them."""
        samples = self._samples["validation"]
        inputs, labels = samples.tensors() if samples.count else (None, None)
        return {"inputs": inputs, "labels": labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._samples["validation"].set(state_dict.get("inputs"), state_dict.get("labels"))

    # Collecting: cheap, and only until num_samples are held.

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._collect("validation", batch, dataloader_idx)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Before the first training step: explain one validation sample with one BOREx
        round, so bad data (a dict batch, NaN images, windows larger than the images) or a
        failing prior show now rather than after a whole epoch; warn if there is no
        validation data."""
        if self._checked:
            return
        self._checked = True
        with forked_rng([]):  # a shuffling loader draws its order from the global RNG
            batch = _first_batch(trainer.val_dataloaders, self.dataloader_idx)
        if batch is None:
            self._warn_empty("validation")
            return
        inputs, labels = split_batch(self.batch_to_inputs, batch)
        format_inputs(inputs, "validation inputs")
        options = replace(self.options, n_iter=1)
        try:
            with undisturbed(trainer, pl_module, self.options.seed):
                x = to_module_input(trainer, pl_module, inputs[:1])
                first_label = None if labels is None else labels[:1]
                explain(pl_module, x, first_label, self.prior, self.target, self.settings, options)
        except (ValueError, TypeError) as err:
            raise type(err)(
                f"BORExCallback cannot explain the first validation sample (checked before "
                f"training): {err}"
            ) from err

    def _warn_empty(self, stage: str) -> None:
        """Warn once that there is nothing to explain."""
        if self._warned_empty:
            return
        self._warned_empty = True
        rank_zero_warn(
            f"BORExCallback: no {stage} samples to explain (is the {stage} dataloader "
            f"{self.dataloader_idx} empty, or limit_val_batches=0?)"
        )

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._samples["test"] = _Samples(self.num_samples)

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", batch, dataloader_idx)

    def _collect(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        samples = self._samples[stage]
        if samples.full or dataloader_idx != self.dataloader_idx:
            return
        inputs, labels = split_batch(self.batch_to_inputs, batch)
        samples.add(inputs, labels)

    # Explaining, at the end of a validation / test epoch.

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self._samples["validation"].closed = True  # the first epoch's samples, for good
        if _fitting(trainer) and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._run(trainer, pl_module, "validation")

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._run(trainer, pl_module, "test")

    def _run(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Collective calls first, on every rank: trainer.log_dir broadcasts under DDP.
        log_dir = trainer.log_dir
        metrics = None
        if trainer.is_global_zero:
            samples = self._samples[stage]
            if samples.count:
                metrics = self._explain_and_log(trainer, pl_module, stage, log_dir)
            else:
                self._warn_empty(stage)
        # Every rank logs rank zero's values, so monitors (EarlyStopping, ModelCheckpoint)
        # see them everywhere; syncing identical values only averages them with themselves.
        metrics = trainer.strategy.broadcast(metrics, src=0)
        if metrics:
            pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)

    def _explain_and_log(
        self, trainer: Any, pl_module: Any, stage: str, log_dir: str | None
    ) -> dict[str, float]:
        inputs, labels = self._samples[stage].tensors()
        metrics: dict[str, float] = {}
        prefix = _PREFIX[stage]
        with undisturbed(trainer, pl_module, self.options.seed):
            x = to_module_input(trainer, pl_module, inputs)
            details, targets = explain(
                pl_module, x, labels, self.prior, self.target, self.settings, self.options
            )
            maps = {"BOREx": details.attributions}
            if self.prior is not None:
                maps = {"prior": details.prior, **maps}
            if self.log_metrics:
                for name, values in maps.items():
                    suffix = "refined" if name == "BOREx" else "prior"
                    for metric, fn in (("deletion", deletion_auc), ("insertion", insertion_auc)):
                        auc = fn(pl_module, x, values, target=targets, n_steps=self.metric_steps)
                        metrics[f"{prefix}/{metric}_auc_{suffix}"] = float(auc.float().mean())
        self.last_explanation = _to_cpu(details)
        epoch = trainer.current_epoch
        file_name = f"{'test_' if stage == 'test' else ''}epoch_{epoch:03d}.png"
        png_path = None
        if needs_png(trainer.loggers, self.save_png):
            png_path = Path(log_dir or trainer.default_root_dir) / "borex" / file_name
        if png_path is None and not shows_images(trainer.loggers):
            return metrics  # nowhere to show a figure: do not draw one
        source = "label" if self.target == "label" and labels is not None else "pred"
        figure = explanation_figure(
            inputs.float(),
            {name: m.detach().float().cpu() for name, m in maps.items()},
            details.uncertainty.detach().float().cpu(),
            titles=[f"{source} {int(t)}" for t in targets.tolist()],
        )
        array, png = render(figure)
        log_image(
            trainer.loggers,
            f"{prefix}/explanations",
            array,
            png,
            file_name,
            trainer.global_step,
            png_path,
        )
        return metrics


def _to_cpu(details: BORExDetails) -> BORExDetails:
    def move(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value.detach().cpu() if isinstance(value, Tensor) else value

    return BORExDetails(**{f.name: move(getattr(details, f.name)) for f in fields(details)})


def _fitting(trainer: Any) -> bool:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn)) == "fit"


def _first_batch(loaders: Any, dataloader_idx: int) -> Any:
    """The first batch of validation dataloader ``dataloader_idx``, or None if there is none."""
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    if loaders is None:
        return None
    return next(iter(loaders), None)
