"""Explaining a batch from inside a Trainer without disturbing it, shared by the callbacks."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from captum_borex._checks import check_finite_number, check_int
from captum_borex._state import forked_rng
from captum_borex.attr.borex import BOREx, BORExDetails
from captum_borex.attr.settings import BORExSettings, resolve_settings

#: Turns a batch into ``(inputs, labels or None)``.
BatchToInputs = Callable[[Any], tuple[Tensor, Tensor | None]]
#: Builds the prior from the LightningModule: a Captum attribution (or None for a flat prior).
PriorFactory = Callable[[nn.Module], Any]
TargetMode = Literal["label", "prediction"]
TARGET_MODES = ("label", "prediction")


def default_batch_to_inputs(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(batch[0], batch[1])`` for tuples and lists, ``(batch, None)`` for a tensor.

    The second element is taken as labels only if it is a tensor; a 1-element tuple or list
    gives ``(batch[0], None)``.

    Raises:
        TypeError: the batch is none of these (pass ``batch_to_inputs``).
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) > 0 and isinstance(batch[0], Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], labels
    raise TypeError(
        "cannot find the inputs in a batch of type "
        f"{type(batch).__name__}; pass batch_to_inputs=lambda batch: (inputs, labels_or_None)"
    )


def split_batch(batch_to_inputs: BatchToInputs, batch: Any) -> tuple[Tensor, Tensor | None]:
    """Apply ``batch_to_inputs`` and check what it returns."""
    out = batch_to_inputs(batch)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"batch_to_inputs must return a pair (inputs, labels or None), got {type(out).__name__}"
        )
    inputs, labels = out
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise TypeError(
            f"batch_to_inputs must return a batch tensor of inputs first, got {_describe(inputs)}"
        )
    if labels is not None:
        if not isinstance(labels, Tensor):
            raise TypeError(
                f"batch_to_inputs must return labels as a tensor or None, got {_describe(labels)}"
            )
        if labels.dim() != 1 or labels.shape[0] != inputs.shape[0] or labels.is_floating_point():
            raise ValueError(
                "labels must hold one integer class index per input, shape "
                f"({inputs.shape[0]},), got {_describe(labels)}; pass batch_to_inputs that "
                "returns (inputs, None) to explain the model's prediction instead"
            )
    return inputs, labels


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_options(prior: Any, target: Any, batch_to_inputs: Any, settings: Any) -> BORExSettings:
    """Check the arguments both callbacks share; returns the resolved settings."""
    if isinstance(prior, type) or (prior is not None and not callable(prior)):
        hint = (
            " (wrap it: prior=lambda module: LayerGradCam(module, module.layer))"
            if hasattr(prior, "attribute")
            else ""
        )
        raise TypeError(
            "prior must be None or a callable taking the LightningModule and returning a "
            f"Captum attribution, got {_describe(prior)}{hint}"
        )
    if target not in TARGET_MODES:
        raise ValueError(f"target must be one of {TARGET_MODES}, got {target!r}")
    if batch_to_inputs is not None and not callable(batch_to_inputs):
        raise TypeError(
            f"batch_to_inputs must be callable or None, got {type(batch_to_inputs).__name__}"
        )
    return resolve_settings(settings)


@dataclass(frozen=True)
class ExplainOptions:
    """The per-call arguments of :meth:`BOREx.attribute` a callback passes, checked early.

    Attributes:
        n_iter: BOREx rounds.
        window_sizes: Window half-sizes in pixels, or None for the scaled published ones.
        baselines: What occluded pixels become (a number, in the model's input space).
        prior_kwargs: Keyword arguments of the prior's ``attribute``, or None.
        internal_batch_size: Largest batch given to the model at once, or None.
        seed: Seed of the explanation (BOREx and a random prior), or None.
    """

    n_iter: int
    window_sizes: tuple[int, ...] | None = None
    baselines: float = 0.0
    prior_kwargs: dict[str, Any] | None = None
    internal_batch_size: int | None = None
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_int(self.n_iter, "n_iter")
        object.__setattr__(self, "window_sizes", check_window_sizes(self.window_sizes))
        object.__setattr__(self, "baselines", check_finite_number(self.baselines, "baselines"))
        if self.prior_kwargs is not None and not isinstance(self.prior_kwargs, dict):
            raise TypeError(
                f"prior_kwargs must be a dict or None, got {type(self.prior_kwargs).__name__}"
            )
        if self.internal_batch_size is not None:
            check_int(self.internal_batch_size, "internal_batch_size")
        if self.seed is not None:
            check_int(self.seed, "seed", minimum=0)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`BOREx.attribute`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_window_sizes(window_sizes: Any) -> tuple[int, ...] | None:
    """None, or a non-empty sequence of positive ints, as a tuple."""
    if window_sizes is None:
        return None
    if (
        isinstance(window_sizes, (int, str))
        or not isinstance(window_sizes, Sequence)
        or len(window_sizes) == 0
        or not all(isinstance(h, int) and not isinstance(h, bool) for h in window_sizes)
    ):
        raise TypeError(f"window_sizes must be None or a sequence of ints, got {window_sizes!r}")
    if min(window_sizes) < 1:
        raise ValueError(f"window_sizes must be >= 1 pixel, got {tuple(window_sizes)}")
    return tuple(window_sizes)


@contextlib.contextmanager
def undisturbed(trainer: Any, module: nn.Module, seed: int | None) -> Iterator[None]:
    """Run code on ``module`` without changing the training that surrounds it.

    Forks every random number generator training might use (torch's CPU generator and the
    module's CUDA device, Python's and NumPy's) and seeds torch with ``seed`` (unless None);
    leaves inference mode (tensors created inside are ordinary tensors, so gradient priors
    work under ``trainer.validate`` / ``test`` / ``predict``); disables gradients (priors
    and the GP fit enable them where they need them); puts the module in eval mode and
    restores every submodule's mode on exit; enters the Trainer's precision context.
    """
    device = _module_device(module)
    cuda = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    modes = [(m, m.training) for m in module.modules()]
    precision = getattr(trainer, "precision_plugin", None)
    forward_context = (
        precision.forward_context() if precision is not None else contextlib.nullcontext()
    )
    try:
        with (
            forked_rng(cuda, seed),
            torch.inference_mode(False),
            torch.no_grad(),
        ):
            module.eval()
            with forward_context:
                yield
    finally:
        for m, training in modes:
            m.training = training


def _module_device(module: nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def to_module_input(trainer: Any, module: nn.Module, inputs: Tensor) -> Tensor:
    """``inputs`` as an ordinary tensor on the module's device, in the Trainer's precision.

    Call inside :func:`undisturbed` (out of inference mode).
    """
    x = inputs.detach().to(_module_device(module))
    precision = getattr(trainer, "precision_plugin", None)
    if precision is not None:
        x = precision.convert_input(x)
    return x.clone() if x.is_inference() or x is inputs else x


def explain(
    module: nn.Module,
    inputs: Tensor,
    labels: Tensor | None,
    prior: PriorFactory | None,
    target: TargetMode,
    settings: BORExSettings,
    options: ExplainOptions,
) -> tuple[BORExDetails, Tensor]:
    """Refine the prior's maps of ``inputs`` with BOREx; call inside :func:`undisturbed`.

    Returns:
        The BOREx details and the targets explained: ``labels`` when ``target="label"``
        and the batch has them, else the model's predicted class.
    """
    if target == "label" and labels is not None:
        # A copy: batches fetched under inference mode hold inference tensors.
        targets = labels.detach().to(device=inputs.device, dtype=torch.long).clone()
    else:
        targets = module(inputs).argmax(1)
    attribution = build_prior(prior, module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        details = BOREx(module, prior=attribution, settings=settings).attribute(
            inputs, target=targets, return_details=True, **options.as_kwargs()
        )
    for warning in caught:
        _warn_once(warning)
    return details, targets


def build_prior(prior: PriorFactory | None, module: nn.Module) -> Any:
    """The attribution ``prior`` builds for ``module`` (None for None).

    Raises:
        ValueError: the factory fails (naming its error).
    """
    if prior is None:
        return None
    try:
        return prior(module)
    except Exception as err:
        raise ValueError(
            f"prior(module) failed: {type(err).__name__}: {err}; prior must take the "
            "LightningModule and return a Captum attribution, e.g. "
            "prior=lambda module: LayerGradCam(module, module.layer4)"
        ) from err


#: Warnings already passed on by :func:`explain` in this process (one per message).
_REPORTED: set[tuple[type[Warning], str]] = set()


def _warn_once(warning: warnings.WarningMessage) -> None:
    """Re-issue a warning caught while explaining, once per process: callbacks explain every
    epoch, and the same advice each epoch is noise."""
    key = (warning.category, str(warning.message))
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno or 0)
