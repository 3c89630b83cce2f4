"""RegionCounterfactual: change a saliency map's region until the model predicts a target."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from captum._utils.typing import TargetType
from torch import Tensor, nn

from captum_borex._checks import check_callable, check_int, check_positive, format_inputs
from captum_borex._forward import format_target_check
from captum_borex._state import modules_of, preserved
from captum_borex.attr._priors import ChannelReduction
from captum_borex.counterfactual.measures import distances
from captum_borex.counterfactual.pixel import check_share, pixel_attack, target_probability
from captum_borex.counterfactual.region import check_saliency, saliency_maps, select_region


class Generator(Protocol):
    """What ``RegionCounterfactual`` needs of a generator (e.g. LatentDiffusionGenerator)."""

    def generate(
        self,
        forward_func: Callable[..., Tensor],
        inputs: Tensor,
        target: Tensor,
        region: Tensor,
        additional_forward_args: Any = None,
        show_progress: bool = False,
    ) -> Tensor: ...

    def modules(self) -> list[nn.Module]: ...


@dataclass
class CounterfactualResult:
    """What :meth:`RegionCounterfactual.generate` returns (all tensors per input).

    Attributes:
        counterfactuals: Input-shaped edited inputs.
        region: Boolean ``(N, 1, *spatial)``, the pixels (voxels) allowed to change.
        maps: ``(N, *spatial)`` the saliency maps of ``original`` that picked the region.
        original: ``(N,)`` the class whose map picked the region.
        target: ``(N,)`` the class asked for.
        flipped: ``(N,)`` boolean, the model now predicts ``target``.
        target_probability: ``(N,)`` the target's softmax probability on the counterfactual.
        l1: ``(N,)`` L1 norm of the change (summed over entries).
        l2: ``(N,)`` L2 norm of the change.
        steps: ``(N,)`` pixel-stage steps used (0: the start already reached ``confidence``).
        latent_steps: Denoising steps of the generator (0 without one).
    """

    counterfactuals: Tensor
    region: Tensor
    maps: Tensor
    original: Tensor
    target: Tensor
    flipped: Tensor
    target_probability: Tensor
    l1: Tensor
    l2: Tensor
    steps: Tensor
    latent_steps: int = 0


class RegionCounterfactual:
    r"""Counterfactuals that change only the region a saliency map picks (ECED, CAMERAS).

    The saliency map of the input's class picks a compact region (see
    :func:`~captum_borex.counterfactual.region.select_region`); a PGD-style attack toward
    the target class, each step's gradient restricted to the region and pruned to its
    largest entries (CAMERAS' focused attack), edits it until the target's probability
    reaches ``confidence``. With a ``generator`` (e.g.
    :class:`~captum_borex.counterfactual.LatentDiffusionGenerator`) the region is first
    redrawn by the generator, guided toward the target, and the pixel stage finishes from
    there. A good map should need a smaller change than a random region of the same size.

    Args:
        forward_func: The classifier, returning logits ``(N, K)``.
        saliency: What picks the region: an object with Captum's
            ``attribute(inputs, target=...)`` (a Captum attribution, BOREx, CAMERAS, RISE),
            a tensor of maps (any shape BOREx accepts as a prior: ``(N, *spatial)``,
            ``(N, 1, *spatial)``, input-shaped, or a smaller layer map ``(N, 1, ...)``),
            or a callable ``(inputs, target) -> maps``.
        generator: Optional generator run before the pixel stage, with a method
            ``generate(forward_func, inputs, target, region, additional_forward_args,
            show_progress)`` returning edited inputs and ``modules()`` listing its models.
            Default: None

    Raises:
        TypeError: ``forward_func`` is not callable, ``saliency`` or ``generator`` has an
            unusable type.

    Examples::

        >>> from captum.attr import LayerGradCam
        >>> explainer = RegionCounterfactual(model, LayerGradCam(model, model.layer4))
        >>> result = explainer.generate(images, target=3, region=0.1, seed=0)
        >>> result.flipped.float().mean(), result.l2
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        saliency: Any,
        generator: Generator | None = None,
    ) -> None:
        check_callable(forward_func, "forward_func")
        check_saliency(saliency)
        if generator is not None and not callable(getattr(generator, "generate", None)):
            raise TypeError(
                "generator must be None or have a generate(forward_func, inputs, target, "
                f"region, ...) method (e.g. LatentDiffusionGenerator), got "
                f"{type(generator).__name__}"
            )
        self.forward_func = forward_func
        self.saliency = saliency
        self.generator = generator

    def generate(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType,
        original: TargetType = None,
        region: float = 0.1,
        n_iter: int = 200,
        step_size: float = 0.05,
        keep: float = 0.2,
        confidence: float = 0.9,
        bounds: tuple[float, float] | None = None,
        additional_forward_args: Any = None,
        saliency_kwargs: dict[str, Any] | None = None,
        reduction: ChannelReduction = "sum",
        seed: int | None = None,
        show_progress: bool = False,
    ) -> CounterfactualResult:
        r"""Counterfactuals turning each input into class ``target``.

        Args:
            inputs: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` clips (or a 1-tuple).
            target: The class each input should become: an int, a tensor (one or N
                values) or a list of N ints.
            original: The class whose map picks the region, in the same forms.
                Default: None (the model's prediction)
            region: Share of the pixels (voxels) that may change, in (0, 1]. Default: 0.1
            n_iter: Most pixel-stage steps per input. Default: 200
            step_size: Largest change of an entry per step, in the inputs' units.
                Default: 0.05
            keep: Share of the region's gradient entries kept at each step (the largest
                ones), in (0, 1]. Default: 0.2
            confidence: An input stops once the target's probability reaches this, in
                (0, 1). Default: 0.9
            bounds: ``(low, high)`` the region's values are clipped to (e.g. ``(0, 1)``
                for images in [0, 1]); None to not clip. Default: None
            additional_forward_args: Extra arguments for ``forward_func`` (tensors whose
                first dimension is N follow their input). Default: None
            saliency_kwargs: Extra keywords for the saliency's ``attribute`` or callable
                (e.g. ``{"n_iter": 30}`` for BOREx). Default: None
            reduction: How input-shaped maps become one value per pixel ("sum", "mean",
                "abs_sum", "max_abs", "l2" or a callable). Default: "sum"
            seed: Seed for everything random (the saliency, the generator's noise);
                the global RNG is left as it was either way. Default: None
            show_progress: Show progress bars. Default: False

        Returns:
            :class:`CounterfactualResult`.

        Raises:
            ValueError: bad inputs; ``region``, ``keep`` or ``confidence`` out of range;
                a target out of range or equal to the original class.
            TypeError: an argument of the wrong type.
        """
        x, _ = format_inputs(inputs)
        options = _checked_options(region, n_iter, step_size, keep, confidence, bounds, seed)
        devices = [x.device] if x.device.type == "cuda" else []
        with preserved(self._modules(), [x]), torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            tgt, orig = self._classes(x, target, original, additional_forward_args)
            maps = saliency_maps(
                self.saliency, x, orig, additional_forward_args, saliency_kwargs, reduction
            )
            mask = select_region(maps, region)
            start, latent_steps = x, 0
            if self.generator is not None:
                start = self.generator.generate(
                    self.forward_func, x, tgt, mask, additional_forward_args, show_progress
                ).detach()
                latent_steps = int(getattr(self.generator, "last_steps", 0))
            edited, steps = pixel_attack(
                self.forward_func,
                start,
                tgt,
                mask,
                additional_forward_args,
                show_progress=show_progress,
                **options,
            )
            prob = target_probability(self.forward_func, edited, tgt, additional_forward_args)
            with torch.no_grad():
                flipped = (
                    self.forward_func(edited, *(additional_forward_args or ())).argmax(1) == tgt
                )
        l1, l2 = distances(x, edited)
        return CounterfactualResult(
            edited, mask, maps, orig, tgt, flipped, prob, l1, l2, steps, latent_steps
        )

    def _modules(self) -> list[nn.Module]:
        extra = self.generator.modules() if hasattr(self.generator, "modules") else []
        return modules_of(self.forward_func, self.saliency) + list(extra)

    def _classes(
        self, x: Tensor, target: TargetType, original: TargetType, args: Any
    ) -> tuple[Tensor, Tensor]:
        """``(N,)`` target and original classes, checked against the model's output."""
        with torch.no_grad():
            logits = self.forward_func(x, *(args or ()))
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(
                "forward_func must return logits (N, K) with one row per input, got "
                f"{getattr(logits, 'shape', type(logits).__name__)}"
            )
        tgt = class_indices(target, x.shape[0], logits.shape[1], x.device, "target")
        if original is None:
            orig = logits.argmax(1)
        else:
            orig = class_indices(original, x.shape[0], logits.shape[1], x.device, "original")
        same = (tgt == orig).nonzero()[:, 0].tolist()
        if same:
            raise ValueError(
                f"target equals the original class for input(s) {same[:5]} (class "
                f"{int(tgt[same[0]])}); pass a different target, or pass original= if the "
                "model's prediction is not the class to explain"
            )
        return tgt, orig


def class_indices(
    classes: TargetType, batch: int, n_classes: int, device: torch.device, name: str
) -> Tensor:
    """``(batch,)`` long class indices from an int, a tensor or a list.

    Raises:
        TypeError: None, a tuple or another type.
        ValueError: a class out of ``[0, n_classes)`` or the wrong number of classes.
    """
    if (
        classes is None
        or isinstance(classes, tuple)
        or (isinstance(classes, list) and classes and isinstance(classes[0], tuple))
    ):
        raise TypeError(
            f"{name} must be an int, a tensor or a list of ints (one class per input), "
            f"got {type(classes).__name__}"
        )
    format_target_check(classes, (n_classes,), batch, name)
    if isinstance(classes, Tensor):
        values = classes.reshape(-1).to(device=device, dtype=torch.long)
    else:
        values = torch.as_tensor(classes, dtype=torch.long, device=device).reshape(-1)
    return values.expand(batch).clone() if values.numel() == 1 else values


def _checked_options(
    region: Any,
    n_iter: Any,
    step_size: Any,
    keep: Any,
    confidence: Any,
    bounds: Any,
    seed: Any,
) -> dict[str, Any]:
    """The pixel stage's options, checked (``region`` and ``seed`` are only checked)."""
    check_share(region, "region")
    check_int(n_iter, "n_iter")
    if seed is not None:
        check_int(seed, "seed", minimum=0)
    confidence_value = check_share(confidence, "confidence")
    if confidence_value == 1:
        raise ValueError("confidence must be below 1 (a probability never reaches it), got 1")
    if bounds is not None and (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
        or not bounds[0] < bounds[1]
    ):
        raise ValueError(f"bounds must be None or (low, high) with low < high, got {bounds!r}")
    return {
        "n_iter": n_iter,
        "step_size": check_positive(step_size, "step_size"),
        "keep": check_share(keep, "keep"),
        "confidence": confidence_value,
        "bounds": None if bounds is None else (float(bounds[0]), float(bounds[1])),
    }
