"""The five "Explain To Me" salience measures (Crum et al., IEEE TAI 2023), batched.

They judge a saliency method (and the model behind it) at scale, without ground truth:

1. :func:`salience_entropy` -- how concentrated are the maps?
2. :func:`out_of_set_shift` -- how do maps (and scores) move when the inputs are corrupted?
3. :func:`transform_consistency` -- does the map follow flips, shifts and rotations?
4. :func:`cross_model_stability` -- do independently trained models look at the same place?
5. :func:`guided_degradation` -- how does the model react when the least (or most)
   salient regions are blurred?

Maps are compared by two similarities, both reported everywhere a comparison is made:

- **SSIM** (:func:`map_ssim`): torchmetrics' ``structural_similarity_index_measure`` with a
  Gaussian window (sigma 1.5) on maps min-max normalised per image to [0, 1]
  (``data_range=1``); clips are compared frame by frame and averaged. 1 = identical.
- **Spearman** (:func:`map_spearman`): rank correlation of the pixel values (average ranks
  for ties), in [-1, 1]; invariant to any increasing rescaling of a map.

Maps from an attribution method are reduced to one value per pixel first (channels summed
by default, ``channel_reduction``), exactly as the faithfulness measures do.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex._checks import (
    check_choice,
    check_finite,
    check_int,
    check_nonnegative,
    check_positive,
    format_inputs,
)
from captum_borex._forward import check_target, target_scores
from captum_borex._ranks import average_ranks
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved
from captum_borex._substrates import gaussian_blur
from captum_borex.attr._priors import (
    REDUCTIONS,
    ChannelReduction,
    _reduce_channels,
    to_pixel_maps,
)

#: Geometric transforms known by name to :func:`transform_consistency`.
TRANSFORMS = ("hflip", "vflip", "rot90", "rot180", "rot270", "shift")
ENTROPY_DEFINITIONS = ("spatial", "histogram")
DEGRADATION_MODES = ("least", "most")

#: A transform of ``(N, C, *spatial)`` tensors, applied alike to inputs and maps.
Transform = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------
# Maps and their similarity
# --------------------------------------------------------------------------------------


def _check_reduction(reduction: ChannelReduction) -> None:
    if not (callable(reduction) or reduction in REDUCTIONS):
        raise ValueError(
            f"channel_reduction must be one of {REDUCTIONS} or a callable, got {reduction!r}"
        )


def _pixel_maps(maps: Any, name: str, reduction: ChannelReduction = "sum") -> Tensor:
    """Maps given without their inputs as ``(N, *spatial)`` floating-point tensors.

    3-D maps are ``(N, H, W)``; 4-D and 5-D maps have a channel axis at 1 (``(N, C, H, W)``,
    ``(N, C, T, H, W)``), reduced by ``reduction`` unless it has size 1.
    """
    if isinstance(maps, tuple) and len(maps) == 1:
        maps = maps[0]
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(maps).__name__}")
    _check_reduction(reduction)
    if maps.dim() == 3:
        out = maps
    elif maps.dim() in (4, 5):
        out = maps[:, 0] if maps.shape[1] == 1 else _reduce_channels(maps, reduction, name)
    else:
        raise ValueError(
            f"{name} must be (N, H, W), (N, C, H, W) or (N, C, T, H, W) maps, "
            f"got shape {tuple(maps.shape)}"
        )
    if out.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(maps.shape)}")
    out = out.detach()
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    check_finite(out, name)
    return out


def _pair_of_maps(maps_a: Any, maps_b: Any, reduction: ChannelReduction) -> tuple[Tensor, Tensor]:
    a = _pixel_maps(maps_a, "maps_a", reduction)
    b = _pixel_maps(maps_b, "maps_b", reduction)
    if a.shape != b.shape:
        raise ValueError(
            f"maps_a {tuple(a.shape)} and maps_b {tuple(b.shape)} must have the same shape "
            "after channel reduction"
        )
    return a, b.to(a.dtype)


def _min_max(maps: Tensor) -> Tensor:
    """Each map rescaled to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - low
    out = torch.where(span > 0, (flat - low) / span.clamp(min=torch.finfo(flat.dtype).tiny), 0.0)
    return out.view_as(maps)


def _ssim(a: Tensor, b: Tensor, sigma: float = 1.5) -> Tensor:
    """SSIM of ``(N, *spatial)`` maps after min-max normalisation; frames averaged."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    height, width = a.shape[-2:]
    radius = int(3.5 * sigma + 0.5)
    if min(height, width) <= radius:
        raise ValueError(
            f"maps of {height}x{width} pixels are too small for an SSIM window of sigma "
            f"{sigma} (radius {radius}); use a smaller sigma"
        )
    frames_a = _min_max(a).reshape(-1, 1, height, width)
    frames_b = _min_max(b).reshape(-1, 1, height, width)
    values = structural_similarity_index_measure(
        frames_a, frames_b, sigma=sigma, reduction="none", data_range=1.0
    )
    return values.reshape(a.shape[0], -1).mean(1).to(a.dtype)


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of ``(N, *spatial)`` maps, pixel by pixel, per image."""
    ranks_a = average_ranks(a.flatten(1))
    ranks_b = average_ranks(b.flatten(1))
    ranks_a = ranks_a - ranks_a.mean(1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(1, keepdim=True)
    var_a, var_b = ranks_a.pow(2).sum(1), ranks_b.pow(2).sum(1)
    denominator = (var_a * var_b).sqrt()
    rho = (ranks_a * ranks_b).sum(1) / denominator.clamp(min=torch.finfo(torch.float64).tiny)
    rho = torch.where(denominator > 0, rho, 0.0)
    rho = torch.where((var_a == 0) & (var_b == 0), 1.0, rho)
    return rho.clamp(-1.0, 1.0).to(a.dtype)


def map_ssim(
    maps_a: Tensor, maps_b: Tensor, sigma: float = 1.5, channel_reduction: ChannelReduction = "sum"
) -> Tensor:
    r"""SSIM between two batches of saliency maps, per image.

    Each map is reduced to one value per pixel, min-max normalised to [0, 1] on its own
    (a constant map becomes all zeros), and compared with torchmetrics'
    ``structural_similarity_index_measure`` (Gaussian window, ``data_range=1``). Clips are
    compared frame by frame and the frames averaged.

    Args:
        maps_a: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, C, T, H, W)`` maps (4-D and 5-D
            maps have a channel axis; size 1 is fine).
        maps_b: Maps of the same shape.
        sigma: Standard deviation of the Gaussian SSIM window in pixels; maps must be
            larger than ``int(3.5 * sigma + 0.5)`` pixels. Default: 1.5
        channel_reduction: How channel maps become one value per pixel: "sum", "mean",
            "abs_sum", "max_abs", "l2" or a callable. Default: "sum"

    Returns:
        ``(N,)`` SSIM in [-1, 1]; 1 for maps equal up to an increasing affine rescaling.

    Examples::

        >>> map_ssim(saliency_a, saliency_b).mean()
    """
    sigma = check_positive(sigma, "sigma")
    a, b = _pair_of_maps(maps_a, maps_b, channel_reduction)
    return _ssim(a, b, sigma)


def map_spearman(
    maps_a: Tensor, maps_b: Tensor, channel_reduction: ChannelReduction = "sum"
) -> Tensor:
    r"""Spearman rank correlation between two batches of saliency maps, per image.

    Pearson correlation of the pixels' ranks (ties get their average rank), computed for
    the whole batch at once. Two constant maps give 1 (the same, empty, ordering); one
    constant map against a varying one gives 0.

    Args:
        maps_a: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, C, T, H, W)`` maps.
        maps_b: Maps of the same shape.
        channel_reduction: As in :func:`map_ssim`. Default: "sum"

    Returns:
        ``(N,)`` correlations in [-1, 1].

    Examples::

        >>> map_spearman(saliency_a, saliency_b)
    """
    a, b = _pair_of_maps(maps_a, maps_b, channel_reduction)
    return _spearman(a, b)


# --------------------------------------------------------------------------------------
# 1. Entropy
# --------------------------------------------------------------------------------------


@dataclass
class SalienceEntropy:
    """Shannon entropy of saliency maps, in bits.

    Attributes:
        entropy: ``(N,)`` entropy of each map.
        max_entropy: ``(N,)`` the largest entropy possible for a map of that size:
            ``log2(P)`` (spatial) or ``log2(min(bins, P))`` (histogram), ``P`` pixels.
        ratio: ``(N,)`` ``entropy / max_entropy`` in [0, 1].
        definition: "spatial" or "histogram".
    """

    entropy: Tensor
    max_entropy: Tensor
    ratio: Tensor
    definition: str


def _shannon(probabilities: Tensor) -> Tensor:
    """Entropy in bits of each row of ``(N, K)`` probabilities (``0 log 0 = 0``)."""
    logs = torch.where(probabilities > 0, probabilities.log2(), 0.0)
    return -(probabilities * logs).sum(1)


def _spatial_distribution(flat: Tensor, absolute: bool) -> Tensor:
    """Each map as a distribution over its pixels; an all-zero map becomes uniform."""
    mass = flat.abs() if absolute else flat.clamp(min=0)
    total = mass.sum(1, keepdim=True)
    uniform = torch.full_like(mass, 1.0 / mass.shape[1])
    return torch.where(total > 0, mass / total.clamp(min=torch.finfo(mass.dtype).tiny), uniform)


def _histogram_distribution(flat: Tensor, absolute: bool, bins: int) -> Tensor:
    """Share of each map's pixels in each of ``bins`` equal bins over its [min, max]."""
    values = _min_max(flat.abs() if absolute else flat)
    index = (values * bins).floor().long().clamp(0, bins - 1)
    counts = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    return counts / flat.shape[1]


def salience_entropy(
    attributions: Tensor,
    definition: Literal["spatial", "histogram"] = "spatial",
    bins: int = 256,
    absolute: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> SalienceEntropy:
    r"""Shannon entropy of each saliency map (Crum et al., 2023, measure 1), in bits.

    Two definitions answer different questions:

    - ``"spatial"`` (default): the map, made non-negative, is normalised to sum to 1 and read
      as a probability distribution over pixel *locations*; ``H = -sum p log2 p``. Low
      entropy = salience concentrated on few pixels. A one-hot map has entropy 0; a
      constant (or all-zero) map is uniform, with the maximum ``log2(P)`` and ratio 1.
    - ``"histogram"``: the map is min-max normalised to [0, 1] and its pixel *values* are
      binned into ``bins`` equal bins; the entropy of the bin shares measures how varied
      the values are, ignoring where they are (the entropy of an image, as in
      ``skimage.measure.shannon_entropy`` on an 8-bit map). A constant map has entropy
      0; a one-hot map nearly 0 (two occupied bins); the maximum is
      ``log2(min(bins, P))``.

    Works for images and clips (every position after the channel axis is a pixel).

    Args:
        attributions: ``(N, H, W)`` maps, or maps with a channel axis ``(N, C, H, W)`` /
            ``(N, C, T, H, W)`` (channels reduced by ``channel_reduction``; size 1 is
            fine). Clip maps need their channel axis, e.g. ``(N, 1, T, H, W)``.
        definition: "spatial" or "histogram". Default: "spatial"
        bins: Number of bins of the histogram definition. Default: 256
        absolute: Use absolute values. If False, negative values are clipped to 0 under
            the spatial definition and kept under the histogram one. Default: True
        channel_reduction: How channel maps become one value per pixel: "sum", "mean",
            "abs_sum", "max_abs", "l2" or a callable. Default: "sum"

    Returns:
        :class:`SalienceEntropy` with ``entropy``, ``max_entropy`` and ``ratio``, each ``(N,)``.

    Raises:
        ValueError: an unknown definition, ``bins < 2``, maps of one pixel, or a bad shape.

    Examples::

        >>> result = salience_entropy(attributions)
        >>> result.ratio.mean()  # 1 = as diffuse as possible
    """
    check_choice(definition, "definition", ENTROPY_DEFINITIONS)
    check_int(bins, "bins", minimum=2)
    flat = _pixel_maps(attributions, "attributions", channel_reduction).flatten(1)
    flat = flat.to(torch.float64)
    n_pixels = flat.shape[1]
    if n_pixels < 2:
        raise ValueError("attributions must have at least 2 pixels per map for an entropy")
    if definition == "spatial":
        probabilities = _spatial_distribution(flat, bool(absolute))
        maximum = math.log2(n_pixels)
    else:
        probabilities = _histogram_distribution(flat, bool(absolute), bins)
        maximum = math.log2(min(bins, n_pixels))
    entropy = _shannon(probabilities).clamp(min=0.0, max=maximum) + 0.0  # no "-0.0"
    max_entropy = torch.full_like(entropy, maximum)
    return SalienceEntropy(
        entropy=entropy, max_entropy=max_entropy, ratio=entropy / maximum, definition=definition
    )


# --------------------------------------------------------------------------------------
# Running the attribution method and the model
# --------------------------------------------------------------------------------------


def _check_method(method: Any, name: str = "attribution_method") -> None:
    if not (callable(getattr(method, "attribute", None)) or callable(method)):
        raise TypeError(
            f"{name} must have an attribute(inputs, target=..., **kwargs) method (a Captum "
            f"attribution, BOREx, ...) or be such a callable, got {type(method).__name__}"
        )


def _check_kwargs(kwargs: Any, name: str = "attribute_kwargs") -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{name} must be a dict or None, got {type(kwargs).__name__}")
    return dict(kwargs)


def _attribute(
    method: Any,
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    attribute_kwargs: dict[str, Any],
    reduction: ChannelReduction,
    name: str = "attribution_method",
) -> Tensor:
    """``method``'s maps of ``inputs`` as ``(N, *spatial)``."""
    kwargs = dict(attribute_kwargs)
    if additional_forward_args is not None:
        kwargs.setdefault("additional_forward_args", additional_forward_args)
    attribute = getattr(method, "attribute", None)
    attribute = attribute if callable(attribute) else method
    with torch.enable_grad():
        maps = attribute(inputs, target=target, **kwargs)
    return to_pixel_maps(maps, inputs, reduction, f"{name} maps")


def _scores(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
    apply_softmax: bool,
) -> Tensor:
    """``(N,)`` the target's score (softmax probability or raw output) for each input."""
    batch = inputs.shape[0]
    rows = torch.arange(batch, device=inputs.device)
    return target_scores(
        forward_func, inputs, rows, target, additional_forward_args, batch, apply_softmax, None
    )


@contextlib.contextmanager
def _untouched(objects: Sequence[object], inputs: Tensor) -> Iterator[None]:
    """Outside inference mode, with every model behind ``objects`` restored on exit and
    the global random number generators forked."""
    with (
        torch.inference_mode(False),
        preserved(modules_of(*objects), [inputs]),
        forked_rng(cuda_devices(inputs)),
    ):
        yield


def _usable(inputs: Tensor) -> Tensor:
    """An ordinary tensor (inference tensors, e.g. from Lightning, cannot take gradients)."""
    return inputs.clone() if inputs.is_inference() else inputs


def _prepare(
    inputs: Any, method: Any, attribute_kwargs: Any, reduction: ChannelReduction
) -> tuple[Tensor, dict[str, Any]]:
    """Checks shared by the measures that run an attribution method."""
    x, _ = format_inputs(inputs)
    _check_method(method)
    _check_reduction(reduction)
    return x, _check_kwargs(attribute_kwargs)


# --------------------------------------------------------------------------------------
# 2. Out-of-set shift
# --------------------------------------------------------------------------------------


@dataclass
class OutOfSetShift:
    """How maps and scores move when the inputs are corrupted.

    Attributes:
        amounts: ``(A,)`` corruption amounts, in the order given.
        ssim: ``(A, N)`` SSIM between the map of each clean input and of its corrupted copy.
        spearman: ``(A, N)`` Spearman correlation between the same maps.
        scores: ``(N,)`` the target's score on the clean inputs.
        corrupted_scores: ``(A, N)`` the target's score on the corrupted inputs.
        score_change: ``(A, N)`` ``corrupted_scores - scores``.
    """

    amounts: Tensor
    ssim: Tensor
    spearman: Tensor
    scores: Tensor
    corrupted_scores: Tensor
    score_change: Tensor


def salt_and_pepper(
    inputs: Tensor,
    amount: float,
    low: float | None = None,
    high: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Salt-and-pepper noise: a share ``amount`` of pixels set to ``high`` or ``low``.

    Each pixel (all channels together, every frame of a clip on its own) is replaced with
    probability ``amount``: half of those by ``high`` (salt), half by ``low`` (pepper).

    Args:
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch.
        amount: Expected share of replaced pixels, in [0, 1].
        low: Pepper value; None uses each image's minimum. Default: None
        high: Salt value; None uses each image's maximum. Default: None
        generator: Random generator (its device is used to draw); None uses the global
            RNG. Default: None

    Returns:
        The corrupted copy, shaped like ``inputs``.

    Examples::

        >>> noisy = salt_and_pepper(images, 0.1, generator=torch.Generator().manual_seed(0))
    """
    x, _ = format_inputs(inputs)
    amount = check_nonnegative(amount, "amount")
    if amount > 1:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    dims = tuple(range(1, x.dim()))
    low_value = x.amin(dims, keepdim=True) if low is None else torch.tensor(float(low))
    high_value = x.amax(dims, keepdim=True) if high is None else torch.tensor(float(high))
    device = generator.device if generator is not None else x.device
    shape = (x.shape[0], 1, *x.shape[2:])
    draw = torch.rand(shape, generator=generator, device=device).to(x.device)
    salt, pepper = draw < amount / 2, (draw >= amount / 2) & (draw < amount)
    out = torch.where(salt, high_value.to(x), x)
    return torch.where(pepper, low_value.to(x), out)


def _corrupter(
    corruption: str | Callable[[Tensor, float], Tensor], seed: int
) -> Callable[[Tensor, float], Tensor]:
    if callable(corruption):
        return corruption
    check_choice(corruption, "corruption", ("salt_and_pepper",))
    generator = torch.Generator().manual_seed(seed)
    return lambda x, amount: salt_and_pepper(x, amount, generator=generator)


def out_of_set_shift(
    forward_func: Callable[..., Tensor],
    attribution_method: Any,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    amounts: Sequence[float] = (0.05, 0.1, 0.2),
    corruption: str | Callable[[Tensor, float], Tensor] = "salt_and_pepper",
    seed: int = 0,
    attribute_kwargs: dict[str, Any] | None = None,
    apply_softmax: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> OutOfSetShift:
    r"""Salience shift on out-of-set inputs (Crum et al., 2023, measure 2).

    Each input is corrupted at every ``amount`` (by default salt-and-pepper noise on that
    share of pixels); the map of the corrupted input is compared with the map of the clean
    one (SSIM and Spearman, see the module notes) and the target's score is recorded on
    both. A method and model whose salience is robust keep high similarities.

    Args:
        forward_func: The model.
        attribution_method: Any object with ``attribute(inputs, target=..., **kwargs)``
            returning maps (a Captum attribution, BOREx, CAMERAS), or such a callable.
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
        target: Output index to explain and score, as in Captum. Default: None
        additional_forward_args: Extra arguments for ``forward_func``, also given to the
            attribution method. Default: None
        amounts: Corruption amounts (shares of pixels for salt-and-pepper).
            Default: (0.05, 0.1, 0.2)
        corruption: "salt_and_pepper" (:func:`salt_and_pepper`, each image's min / max as
            pepper / salt) or a callable ``(inputs, amount) -> corrupted inputs``.
            Default: "salt_and_pepper"
        seed: Seed of the salt-and-pepper noise (the global RNG is not used). Default: 0
        attribute_kwargs: Extra keyword arguments for ``attribution_method.attribute``.
            Default: None
        apply_softmax: Score by the target's softmax probability; False uses the raw
            output. Default: True
        channel_reduction: How channel maps become one value per pixel. Default: "sum"

    Returns:
        :class:`OutOfSetShift` with ``(A, N)`` similarities and score changes.

    Examples::

        >>> shift = out_of_set_shift(model, Saliency(model), images, target=labels)
        >>> shift.spearman.mean(1)  # one value per amount
    """
    x, kwargs = _prepare(inputs, attribution_method, attribute_kwargs, channel_reduction)
    if isinstance(amounts, (int, float)) or len(amounts) == 0:
        raise ValueError(f"amounts must be a non-empty sequence of numbers, got {amounts!r}")
    check_int(seed, "seed", minimum=0)
    corrupt = _corrupter(corruption, seed)
    run = (additional_forward_args, kwargs, channel_reduction)
    with _untouched((forward_func, attribution_method), x):
        x = _usable(x)
        check_target(forward_func, x, target, additional_forward_args, apply_softmax)
        clean_maps = _attribute(attribution_method, x, target, *run)
        scores = _scores(forward_func, x, target, additional_forward_args, apply_softmax)
        ssim, spearman, corrupted_scores = [], [], []
        for amount in amounts:
            corrupted = corrupt(x, float(amount))
            if not isinstance(corrupted, Tensor) or corrupted.shape != x.shape:
                raise ValueError(
                    f"corruption must return a tensor of the inputs' shape {tuple(x.shape)}, "
                    f"got {getattr(corrupted, 'shape', type(corrupted).__name__)}"
                )
            maps = _attribute(attribution_method, corrupted, target, *run)
            ssim.append(_ssim(clean_maps, maps))
            spearman.append(_spearman(clean_maps, maps))
            corrupted_scores.append(
                _scores(forward_func, corrupted, target, additional_forward_args, apply_softmax)
            )
    corrupted_scores_t = torch.stack(corrupted_scores)
    return OutOfSetShift(
        amounts=torch.tensor([float(a) for a in amounts], dtype=torch.float64),
        ssim=torch.stack(ssim),
        spearman=torch.stack(spearman),
        scores=scores,
        corrupted_scores=corrupted_scores_t,
        score_change=corrupted_scores_t - scores,
    )


# --------------------------------------------------------------------------------------
# 3. Transform consistency
# --------------------------------------------------------------------------------------


@dataclass
class TransformConsistency:
    """Agreement of ``map(T(x))`` with ``T(map(x))`` for each transform ``T``.

    Attributes:
        ssim: Transform name -> ``(N,)`` SSIM (1 for an exactly equivariant method).
        spearman: Transform name -> ``(N,)`` Spearman correlation (1 likewise).
    """

    ssim: dict[str, Tensor]
    spearman: dict[str, Tensor]


def _shifted(tensor: Tensor, rows: int, cols: int, fill: float) -> Tensor:
    """``tensor`` moved by ``rows`` down and ``cols`` right on its last two axes."""
    out = torch.full_like(tensor, fill)
    height, width = tensor.shape[-2:]
    src_r, dst_r = slice(max(0, -rows), height - max(0, rows)), slice(max(0, rows), None)
    src_c, dst_c = slice(max(0, -cols), width - max(0, cols)), slice(max(0, cols), None)
    dst_r = slice(dst_r.start, dst_r.start + (src_r.stop - src_r.start))
    dst_c = slice(dst_c.start, dst_c.start + (src_c.stop - src_c.start))
    out[..., dst_r, dst_c] = tensor[..., src_r, src_c]
    return out


def _overlap(tensor: Tensor, rows: int, cols: int) -> Tensor:
    """The part of a shifted tensor that came from the original (not the fill)."""
    height, width = tensor.shape[-2:]
    return tensor[..., max(0, rows) : height + min(0, rows), max(0, cols) : width + min(0, cols)]


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def _named_transforms(
    spatial: tuple[int, ...], shift: tuple[int, int] | None, fill: float
) -> dict[str, tuple[Transform, Transform]]:
    """Name -> (transform, crop to the region both maps know)."""
    height, width = spatial[-2:]
    if shift is None:
        shift = (max(1, height // 8), max(1, width // 8))
    if (
        not isinstance(shift, (tuple, list))
        or len(shift) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in shift)
    ):
        raise TypeError(f"shift must be a pair of ints (rows, columns), got {shift!r}")
    rows, cols = shift
    if abs(rows) >= height or abs(cols) >= width:
        raise ValueError(f"shift {tuple(shift)} must be smaller than the image ({height}x{width})")
    return {
        "hflip": (lambda t: t.flip(-1), _identity),
        "vflip": (lambda t: t.flip(-2), _identity),
        "rot90": (lambda t: t.rot90(1, (-2, -1)), _identity),
        "rot180": (lambda t: t.rot90(2, (-2, -1)), _identity),
        "rot270": (lambda t: t.rot90(3, (-2, -1)), _identity),
        "shift": (lambda t: _shifted(t, rows, cols, fill), lambda t: _overlap(t, rows, cols)),
    }


def _resolve_transforms(
    transforms: Sequence[str] | Mapping[str, Transform],
    spatial: tuple[int, ...],
    shift: tuple[int, int] | None,
    fill: float,
) -> dict[str, tuple[Transform, Transform]]:
    if isinstance(transforms, Mapping):
        if not transforms or not all(callable(t) for t in transforms.values()):
            raise TypeError("transforms given as a dict must map names to callables")
        return {str(name): (fn, _identity) for name, fn in transforms.items()}
    if isinstance(transforms, str) or len(transforms) == 0:
        raise ValueError(
            f"transforms must be a non-empty sequence of names from {TRANSFORMS} "
            f"or a dict of callables, got {transforms!r}"
        )
    for name in transforms:
        check_choice(name, "transforms", TRANSFORMS)
    known = _named_transforms(spatial, shift, fill)
    return {name: known[name] for name in transforms}


def transform_consistency(
    forward_func: Callable[..., Tensor],
    attribution_method: Any,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    transforms: Sequence[str] | Mapping[str, Transform] = TRANSFORMS,
    shift: tuple[int, int] | None = None,
    fill: float = 0.0,
    attribute_kwargs: dict[str, Any] | None = None,
    channel_reduction: ChannelReduction = "sum",
) -> TransformConsistency:
    r"""Does salience follow geometric transforms? (Crum et al., 2023, measure 3)

    For each transform ``T`` the map of the transformed input, ``map(T(x))``, is compared
    with the transformed map, ``T(map(x))`` (SSIM and Spearman, see the module notes). An
    exactly equivariant method scores 1. Transforms act on the last two (spatial) axes, so
    clips are transformed frame by frame.

    - "hflip" / "vflip": mirror left-right / top-bottom;
    - "rot90" / "rot180" / "rot270": counter-clockwise rotation (non-square images change
      shape; the model must accept that);
    - "shift": move by ``shift`` pixels, the uncovered border filled with ``fill``; the
      maps are compared only where both know the image (the overlap).

    Args:
        forward_func: The model (its modules are left untouched; used to check ``target``).
        attribution_method: Any object with ``attribute(inputs, target=..., **kwargs)``,
            or such a callable.
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
        target: Output index to explain, as in Captum. Default: None
        additional_forward_args: Extra arguments for the model and the method.
            Default: None
        transforms: Names from ("hflip", "vflip", "rot90", "rot180", "rot270", "shift"), or
            a dict name -> callable applied alike to inputs ``(N, C, *spatial)`` and maps
            ``(N, 1, *spatial)``. Default: all six names
        shift: ``(rows, columns)`` of the "shift" transform (negative = up / left). None:
            one eighth of the image each way. Default: None
        fill: Value of the border uncovered by "shift", in the model's input space.
            Default: 0.0
        attribute_kwargs: Extra keyword arguments for the method. Default: None
        channel_reduction: How channel maps become one value per pixel. Default: "sum"

    Returns:
        :class:`TransformConsistency`: per transform, ``(N,)`` SSIM and Spearman.

    Examples::

        >>> result = transform_consistency(model, Saliency(model), images, target=labels)
        >>> {name: v.mean().item() for name, v in result.spearman.items()}
    """
    x, kwargs = _prepare(inputs, attribution_method, attribute_kwargs, channel_reduction)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"fill must be a number, got {type(fill).__name__}")
    if not math.isfinite(fill):
        raise ValueError(f"fill must be finite, got {fill}")
    resolved = _resolve_transforms(transforms, tuple(x.shape[2:]), shift, float(fill))
    run = (additional_forward_args, kwargs, channel_reduction)
    ssim: dict[str, Tensor] = {}
    spearman: dict[str, Tensor] = {}
    with _untouched((forward_func, attribution_method), x):
        x = _usable(x)
        check_target(forward_func, x, target, additional_forward_args, False)
        maps = _attribute(attribution_method, x, target, *run).unsqueeze(1)
        for name, (transform, crop) in resolved.items():
            moved = transform(x)
            of_moved = _attribute(attribution_method, moved, target, *run)
            expected = transform(maps)[:, 0]
            if expected.shape != of_moved.shape:
                raise ValueError(
                    f"transform {name!r} gives maps of shape {tuple(expected.shape)} but the "
                    f"method's maps of the transformed inputs have {tuple(of_moved.shape)}"
                )
            of_moved, expected = crop(of_moved), crop(expected)
            ssim[name] = _ssim(of_moved, expected)
            spearman[name] = _spearman(of_moved, expected)
    return TransformConsistency(ssim=ssim, spearman=spearman)


# --------------------------------------------------------------------------------------
# 4. Cross-model stability
# --------------------------------------------------------------------------------------


@dataclass
class CrossModelStability:
    """Similarity of the maps of several models on the same inputs, for every pair.

    Attributes:
        pairs: The ``(i, j)`` model indices of each pair, ``i < j``.
        ssim: ``(n_pairs, N)`` SSIM between the two models' maps.
        spearman: ``(n_pairs, N)`` Spearman correlation between them.
        mean_ssim: ``(N,)`` SSIM averaged over pairs.
        mean_spearman: ``(N,)`` Spearman averaged over pairs.
    """

    pairs: list[tuple[int, int]]
    ssim: Tensor
    spearman: Tensor
    mean_ssim: Tensor
    mean_spearman: Tensor


def _methods_for(models: Sequence[Callable[..., Tensor]], attribution_method: Any) -> list[Any]:
    """One attribution method per model, from a sequence or a factory."""
    if isinstance(attribution_method, (list, tuple)):
        if len(attribution_method) != len(models):
            raise ValueError(
                f"attribution_method holds {len(attribution_method)} methods for "
                f"{len(models)} models; give one per model or a factory"
            )
        methods = list(attribution_method)
    elif isinstance(attribution_method, type) or (
        callable(attribution_method) and not hasattr(attribution_method, "attribute")
    ):
        methods = [attribution_method(model) for model in models]
    else:
        raise TypeError(
            "attribution_method must be a sequence of attribution methods (one per model) or "
            "a factory model -> method (e.g. captum.attr.Saliency), "
            f"got {type(attribution_method).__name__}"
        )
    for method in methods:
        _check_method(method)
    return methods


def cross_model_stability(
    forward_funcs: Sequence[Callable[..., Tensor]],
    attribution_method: Any,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    attribute_kwargs: dict[str, Any] | None = None,
    channel_reduction: ChannelReduction = "sum",
) -> CrossModelStability:
    r"""Stability of salience across independently trained models (Crum et al., 2023, 4).

    Every model explains the same inputs with the same method; the maps of every pair of
    models are compared (SSIM and Spearman, see the module notes). Models trained with
    different seeds that look at the same evidence score high.

    Args:
        forward_funcs: Two or more models with the same outputs.
        attribution_method: A sequence of attribution methods, one per model (each bound
            to its model), or a factory ``model -> method`` such as the class
            ``captum.attr.Saliency`` or ``lambda m: LayerGradCam(m, m.features[-1])``.
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
        target: Output index to explain, the same for every model. Default: None
        additional_forward_args: Extra arguments for the models and methods. Default: None
        attribute_kwargs: Extra keyword arguments for every ``attribute`` call.
            Default: None
        channel_reduction: How channel maps become one value per pixel. Default: "sum"

    Returns:
        :class:`CrossModelStability` with ``(n_pairs, N)`` similarities and their means.

    Examples::

        >>> stability = cross_model_stability([model_a, model_b, model_c], Saliency, images,
        ...                                   target=labels)
        >>> stability.mean_spearman.mean()
    """
    if isinstance(forward_funcs, (str, bytes)) or not isinstance(forward_funcs, Sequence):
        raise TypeError(
            f"forward_funcs must be a sequence of models, got {type(forward_funcs).__name__}"
        )
    if len(forward_funcs) < 2:
        raise ValueError(f"forward_funcs must hold at least 2 models, got {len(forward_funcs)}")
    if not all(callable(f) for f in forward_funcs):
        raise TypeError("every entry of forward_funcs must be callable")
    x, _ = format_inputs(inputs)
    _check_reduction(channel_reduction)
    kwargs = _check_kwargs(attribute_kwargs)
    methods = _methods_for(forward_funcs, attribution_method)
    with _untouched((*forward_funcs, *methods), x):
        x = _usable(x)
        maps = []
        for model, method in zip(forward_funcs, methods):
            check_target(model, x, target, additional_forward_args, False)
            maps.append(
                _attribute(method, x, target, additional_forward_args, kwargs, channel_reduction)
            )
    pairs = list(itertools.combinations(range(len(maps)), 2))
    ssim = torch.stack([_ssim(maps[i], maps[j]) for i, j in pairs])
    spearman = torch.stack([_spearman(maps[i], maps[j]) for i, j in pairs])
    return CrossModelStability(
        pairs=pairs,
        ssim=ssim,
        spearman=spearman,
        mean_ssim=ssim.mean(0),
        mean_spearman=spearman.mean(0),
    )


# --------------------------------------------------------------------------------------
# 5. Salience-guided degradation
# --------------------------------------------------------------------------------------


@dataclass
class GuidedDegradation:
    """The model's and the method's reaction to salience-guided blurring.

    Attributes:
        degraded: The blurred inputs, shaped like the inputs.
        scores: ``(N,)`` the target's score on the original inputs.
        degraded_scores: ``(N,)`` the target's score on the blurred inputs.
        score_change: ``(N,)`` ``degraded_scores - scores``.
        ssim: ``(N,)`` SSIM between the map of each input and of its blurred copy.
        spearman: ``(N,)`` Spearman correlation between the same maps.
    """

    degraded: Tensor
    scores: Tensor
    degraded_scores: Tensor
    score_change: Tensor
    ssim: Tensor
    spearman: Tensor


def guided_blur(
    inputs: Tensor,
    attributions: Tensor,
    mode: Literal["least", "most"] = "least",
    max_sigma: float = 5.0,
    n_levels: int = 6,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    r"""Blur each pixel by an amount set by its salience.

    The map is min-max normalised per image to ``s`` in [0, 1] (a constant map becomes 0).
    The blur strength is ``d = 1 - s`` (``mode="least"``: the least salient pixels are
    blurred most, the most salient one is kept) or ``d = s`` (``mode="most"``). A pixel's
    value is read from a stack of Gaussian blurs of the whole input with standard
    deviations ``0, max_sigma / (n_levels - 1), ..., max_sigma`` (level 0 is the input
    itself), interpolating linearly between the two levels around ``d * max_sigma``.
    Clips are blurred frame by frame.

    Args:
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch.
        attributions: Maps in any layout accepted by the faithfulness measures.
        mode: "least" or "most". Default: "least"
        max_sigma: Blur (pixels) of a pixel with ``d = 1``. Default: 5.0 (RISE's blur)
        n_levels: Number of blur levels, including the unblurred input. Default: 6
        channel_reduction: How channel maps become one value per pixel. Default: "sum"

    Returns:
        The degraded inputs, shaped like ``inputs``.

    Examples::

        >>> degraded = guided_blur(images, attributions, mode="least")
    """
    x, _ = format_inputs(inputs)
    check_choice(mode, "mode", DEGRADATION_MODES)
    max_sigma = check_positive(max_sigma, "max_sigma")
    check_int(n_levels, "n_levels", minimum=2)
    _check_reduction(channel_reduction)
    salience = _min_max(to_pixel_maps(attributions, x, channel_reduction, "attributions"))
    strength = 1 - salience if mode == "least" else salience
    sigmas = [max_sigma * level / (n_levels - 1) for level in range(1, n_levels)]
    stack = torch.stack(
        [x] + [gaussian_blur(x, 2 * math.ceil(3 * sigma) + 1, sigma) for sigma in sigmas]
    )
    position = strength.unsqueeze(1).expand_as(x) * (n_levels - 1)
    lower = position.floor().long().clamp(max=n_levels - 2)
    weight = position - lower
    below = stack.gather(0, lower.unsqueeze(0))[0]
    above = stack.gather(0, (lower + 1).unsqueeze(0))[0]
    return (1 - weight) * below + weight * above


def guided_degradation(
    forward_func: Callable[..., Tensor],
    attribution_method: Any,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    additional_forward_args: Any = None,
    mode: Literal["least", "most"] = "least",
    max_sigma: float = 5.0,
    n_levels: int = 6,
    attribute_kwargs: dict[str, Any] | None = None,
    apply_softmax: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> GuidedDegradation:
    r"""Salience-guided image degradation (Crum et al., 2023, measure 5).

    Each input is blurred by :func:`guided_blur` according to its own map: with
    ``mode="least"`` the least salient regions are blurred most (a faithful map keeps the
    evidence, so the score should barely move); with ``mode="most"`` the most salient
    regions are blurred (the score should fall). Reported: the target's score before and
    after, and the similarity (SSIM and Spearman, see the module notes) of the map of the
    degraded input with the original map.

    Args:
        forward_func: The model.
        attribution_method: Any object with ``attribute(inputs, target=..., **kwargs)``,
            or such a callable.
        inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
        target: Output index to explain and score, as in Captum. Default: None
        additional_forward_args: Extra arguments for the model and the method.
            Default: None
        mode: Blur the "least" or the "most" salient regions hardest. Default: "least"
        max_sigma: Strongest blur in pixels. Default: 5.0
        n_levels: Number of blur levels, including none. Default: 6
        attribute_kwargs: Extra keyword arguments for the method. Default: None
        apply_softmax: Score by the target's softmax probability; False uses the raw
            output. Default: True
        channel_reduction: How channel maps become one value per pixel. Default: "sum"

    Returns:
        :class:`GuidedDegradation` with ``(N,)`` scores, score changes and similarities.

    Examples::

        >>> result = guided_degradation(model, Saliency(model), images, target=labels)
        >>> result.score_change.mean()
    """
    x, kwargs = _prepare(inputs, attribution_method, attribute_kwargs, channel_reduction)
    check_choice(mode, "mode", DEGRADATION_MODES)
    run = (additional_forward_args, kwargs, channel_reduction)
    with _untouched((forward_func, attribution_method), x):
        x = _usable(x)
        check_target(forward_func, x, target, additional_forward_args, apply_softmax)
        maps = _attribute(attribution_method, x, target, *run)
        degraded = guided_blur(x, maps, mode, max_sigma, n_levels)
        degraded_maps = _attribute(attribution_method, degraded, target, *run)
        scores = _scores(forward_func, x, target, additional_forward_args, apply_softmax)
        after = _scores(forward_func, degraded, target, additional_forward_args, apply_softmax)
    return GuidedDegradation(
        degraded=degraded.detach(),
        scores=scores,
        degraded_scores=after,
        score_change=after - scores,
        ssim=_ssim(maps, degraded_maps),
        spearman=_spearman(maps, degraded_maps),
    )
