"""CAMERAS: multi-scale class activation mapping (Jalwana et al., CVPR 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _format_additional_forward_args, _select_targets
from captum._utils.typing import TargetType
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_borex._checks import check_callable, check_finite, check_int, format_inputs
from captum_borex._forward import check_target, rows_of_args, rows_of_target
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved

#: Default input scales: the input's side times 1, 1.5, ..., 4 (seven resolutions; 224 to
#: 896 pixels for a 224-pixel input, about the range the paper explores).
DEFAULT_SCALES = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)

#: With ``channel_chunk=None``, channels are upsampled in chunks of about this many values
#: per tensor (16 MiB in float32): all channels at once is about twice as slow at 224 pixels.
AUTO_CHUNK_VALUES = 2**22


class CAMERAS(LayerAttribution, GradientAttribution):
    r"""CAMERAS (Jalwana et al., CVPR 2021): class activation maps at enhanced resolution.

    The input is upsampled (bicubic) to several resolutions. At each one the layer's
    activations ``A_s`` and the gradients ``G_s`` of the target's output with respect to
    them are recorded and upsampled (bilinear) to the input's resolution. Activations and
    gradients are averaged over the scales separately, and the map is

    .. math::

        M = \mathrm{ReLU}\Big(\sum_k \bar A_k \odot \bar G_k\Big), \quad
        \bar A = \frac{1}{|S|} \sum_s \mathrm{up}(A_s), \quad
        \bar G = \frac{1}{|S|} \sum_s \mathrm{up}(G_s),

    normalised per image by its maximum. Unlike Grad-CAM the gradients are not pooled over
    space, and the larger inputs let a deep layer resolve details finer than its stride, so
    maps are sharp while still depending on the model's weights (they pass the
    parameter-randomisation sanity check).

    CAMERAS assumes the model still recognises its inputs when they are enlarged, as
    ImageNet models trained with random resized crops do. For a model that only ever saw one
    scale the large scales add noise, and maps can be worse than Grad-CAM's: check the
    model's accuracy on upsampled inputs, or pass smaller ``scales``.

    Every image of a batch is explained together; an image's map does not depend on the
    other images in its batch (for a model in eval mode, up to float rounding -- which, in a
    max-pooling model, can occasionally move a gradient to a tied maximum). Gradients are
    taken with ``torch.autograd.grad``, so the parameters' ``.grad`` are untouched, and the
    model's modes, hooks, ``requires_grad`` flags and buffers are left as they were.

    Args:
        forward_func: The model (or a function calling it) returning ``(N, K)`` outputs.
        layer: The convolutional layer to explain, a submodule of the model whose output
            (or input) is ``(N, channels, h, w)``; usually the last convolutional block.

    Examples::

        >>> cameras = CAMERAS(model, model.layer4)
        >>> saliency = cameras.attribute(images, target=labels)
        >>> saliency.shape  # (N, 1, H, W), each map scaled to a maximum of 1
        >>> borex = BOREx(model, prior=CAMERAS(model, model.layer4))
    """

    def __init__(self, forward_func: Callable[..., Tensor], layer: nn.Module) -> None:
        check_callable(forward_func, "forward_func")
        _check_layer(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer)
        GradientAttribution.__init__(self, forward_func)

    @classmethod
    def get_name(cls) -> str:
        return "CAMERAS"

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        scales: Sequence[float] | None = None,
        attribute_to_input_shape: bool = False,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = True,
        normalise: bool = True,
        channel_chunk: int | None = None,
        internal_batch_size: int | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""The CAMERAS map of every input.

        Args:
            inputs: ``(N, C, H, W)`` images, or a tuple holding one such tensor (the
                output is then a tuple too).
            target: Output index to explain, as in Captum: an int, a tensor of one index
                per input, a list of ints (or tuples for multi-dimensional outputs). None
                only for models with one output per input. Default: None
            additional_forward_args: Extra arguments for ``forward_func`` after the inputs;
                they are passed unchanged at every scale (only the image is resized), and
                tensors whose first dimension is N follow their inputs when
                ``internal_batch_size`` splits the batch. Default: None
            scales: Factors by which the input's height and width are multiplied, one
                model pass each (sizes are rounded to whole pixels). None uses
                ``(1, 1.5, 2, 2.5, 3, 3.5, 4)``: the input's resolution and six larger
                ones up to four times its side (224 to 896 pixels for a 224-pixel input).
                The cost grows with the sum of the squared factors (about 51 passes at
                the input's resolution for the default); fewer or smaller factors are
                faster and coarser. Default: None
            attribute_to_input_shape: Return maps shaped like the inputs (the map
                repeated over channels, as BOREx and RISE do) instead of ``(N, 1, H, W)``.
                Default: False
            attribute_to_layer_input: Use the layer's input (its first positional
                argument) instead of its output. Default: False
            relu_attributions: Keep only the positive part of the map, as published.
                Default: True
            normalise: Divide each map by its largest absolute value, so it lies in
                [0, 1] (in [-1, 1] with ``relu_attributions=False``); an all-zero map
                stays zero. False returns the raw channel sum of mean activation times
                mean gradient. Default: True
            channel_chunk: Layer channels upsampled to the input's resolution at once;
                the mean activations and gradients of ``c`` channels take about
                ``4 * N * c * H * W`` values. The result does not depend on it (up to float
                rounding). None picks ``c`` so that this is about ``4 * 2**22`` values
                (64 MiB in float32). Default: None
            internal_batch_size: Largest number of images given to the model at once
                (each is shown at every scale); None for the whole batch. The peak memory
                is usually the model's forward and backward pass at the largest scale
                (16 times the input's area by default), which this bounds. Default: None

        Returns:
            Tensor (or tuple of one): ``(N, 1, H, W)`` maps at the inputs' resolution, or
            the inputs' shape with ``attribute_to_input_shape=True``; on the inputs'
            device, in their dtype, without gradient history.

        Raises:
            ValueError: inputs that are not ``(N, C, H, W)`` images, a target out of range,
                empty or non-positive ``scales``, a layer that does not run exactly once
                per forward pass or whose activations are not ``(N, channels, h, w)``, or a
                target whose output does not depend on the layer.
            TypeError: ``scales`` not a sequence of numbers, or a non-int chunk size.
        """
        x, is_tuple = format_inputs(inputs)
        if x.dim() != 4:
            raise ValueError(f"inputs must be (N, C, H, W) images, got shape {tuple(x.shape)}")
        factors = _check_scales(scales)
        if channel_chunk is not None:
            check_int(channel_chunk, "channel_chunk")
        if internal_batch_size is not None:
            check_int(internal_batch_size, "internal_batch_size")
        sizes = _scaled_sizes(x.shape[-2:], factors)
        batch = x.shape[0]
        chunk = internal_batch_size or batch

        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            preserved(modules_of(self.forward_func, self.layer), [x]),
            forked_rng(cuda_devices(x)),
        ):
            # Under inference mode (e.g. Lightning's predict) autograd needs ordinary tensors.
            if x.is_inference():
                x = x.clone()
            args = _clone_inference(additional_forward_args)
            check_target(self.forward_func, x, target, args, False, chunk)
            if isinstance(target, Tensor) and target.numel() > 1:
                target = target.reshape(-1)  # (N, 1) like (N,), as the other methods take it
            if chunk >= batch:
                parts = [(x, target, args)]
            else:
                parts = [
                    (x[rows], rows_of_target(target, rows), rows_of_args(args, rows, batch))
                    for rows in torch.arange(batch, device=x.device).split(chunk)
                ]
            cam = torch.cat(
                [
                    self._maps(*part, sizes, attribute_to_layer_input, channel_chunk)
                    for part in parts
                ]
            ).to(x.dtype)
        check_finite(cam, "the CAMERAS maps (from the model's outputs and gradients at `scales`)")
        if relu_attributions:
            cam = cam.clamp(min=0)
        if normalise:
            cam = _normalise(cam)
        out = cam.unsqueeze(1)
        if attribute_to_input_shape:
            out = out.expand_as(x).contiguous()
        return (out,) if is_tuple else out

    def _maps(
        self,
        x: Tensor,
        target: TargetType,
        args: Any,
        sizes: list[tuple[int, int]],
        to_layer_input: bool,
        channel_chunk: int | None,
    ) -> Tensor:
        """``(N, H, W)`` channel sum of mean activation times mean gradient, before ReLU."""
        out_size = (x.shape[-2], x.shape[-1])
        pixels = out_size[0] * out_size[1]
        small: list[tuple[Tensor, Tensor]] = []
        sums: tuple[Tensor, Tensor] | None = None
        for size in sizes:
            act, grad = self._layer_pass(x, size, target, args, to_layer_input)
            if act.shape[-2] * act.shape[-1] < pixels:
                # Cheaper to keep at the layer's resolution and upsample at the end.
                small.append((act, grad))
            else:
                sums = _add_upsampled(sums, act, grad, out_size, channel_chunk)
        return _combine(small, sums, out_size, len(sizes), channel_chunk)

    def _layer_pass(
        self,
        x: Tensor,
        size: tuple[int, int],
        target: TargetType,
        args: Any,
        to_layer_input: bool,
    ) -> tuple[Tensor, Tensor]:
        """The layer's activations and the target's gradients for ``x`` resized to ``size``."""
        if size == (x.shape[-2], x.shape[-1]):
            shown = x.detach()
        else:
            shown = F.interpolate(x.detach(), size=size, mode="bicubic", align_corners=False)
        shown.requires_grad_(True)
        captured: list[Any] = []

        def hook(module: nn.Module, layer_inputs: tuple[Any, ...], output: Any) -> None:
            if not to_layer_input:
                captured.append(output)
            else:
                captured.append(layer_inputs[0] if layer_inputs else None)

        handle = self.layer.register_forward_hook(hook)
        try:
            output = self.forward_func(shown, *(_format_additional_forward_args(args) or ()))
        finally:
            handle.remove()
        act = _check_activations(captured, x.shape[0], to_layer_input)
        score = _select_targets(output, target).sum()
        (grad,) = torch.autograd.grad(score, act, allow_unused=True)
        if grad is None:
            raise ValueError(
                "the target's output does not depend on layer "
                f"{type(self.layer).__name__}; choose a layer on the path to the output"
            )
        return act.detach(), grad.detach()


def _check_layer(forward_func: Callable[..., Tensor], layer: Any) -> None:
    """Raise a clear error unless ``layer`` is a module of the model (when one is known)."""
    if not isinstance(layer, nn.Module):
        raise TypeError(
            f"layer must be a torch.nn.Module (one layer of the model), got {type(layer).__name__}"
        )
    models = modules_of(forward_func)
    if models and not any(layer is m for model in models for m in model.modules()):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model "
            f"{type(models[0]).__name__}"
        )


def _check_scales(scales: Any) -> tuple[float, ...]:
    """The scale factors as floats, or a clear error naming ``scales``."""
    if scales is None:
        return DEFAULT_SCALES
    if isinstance(scales, Tensor):
        scales = scales.reshape(-1).tolist()
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
        raise TypeError(
            f"scales must be a sequence of positive numbers, got {type(scales).__name__}"
        )
    if len(scales) == 0:
        raise ValueError("scales must hold at least one scale factor, got an empty sequence")
    for value in scales:
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"scales must hold numbers, got {value!r}")
        if not 0 < value < math.inf:
            raise ValueError(f"scales must hold positive finite numbers, got {value!r}")
    return tuple(float(v) for v in scales)


def _scaled_sizes(spatial: Sequence[int], factors: Sequence[float]) -> list[tuple[int, int]]:
    return [(max(1, round(spatial[0] * f)), max(1, round(spatial[1] * f))) for f in factors]


def _clone_inference(args: Any) -> Any:
    """``args`` with inference-mode tensors replaced by ordinary copies."""
    if isinstance(args, Tensor):
        return args.clone() if args.is_inference() else args
    if isinstance(args, tuple):
        return tuple(_clone_inference(a) for a in args)
    if isinstance(args, list):
        return [_clone_inference(a) for a in args]
    return args


def _check_activations(captured: list[Any], batch: int, to_layer_input: bool) -> Tensor:
    where = "input" if to_layer_input else "output"
    if len(captured) != 1:
        hint = " (is it part of the model that forward_func runs?)" if not captured else ""
        raise ValueError(
            f"layer must run exactly once per forward pass; it ran {len(captured)} times{hint}"
        )
    act = captured[0]
    if not isinstance(act, Tensor) or act.dim() != 4 or act.shape[0] != batch:
        shape = tuple(act.shape) if isinstance(act, Tensor) else type(act).__name__
        raise ValueError(
            f"the layer's {where} must be a tensor (N, channels, h, w) with N = {batch}, "
            f"got {shape}"
        )
    if not act.requires_grad:
        raise ValueError(f"the layer's {where} does not depend on the inputs")
    return act


def _channel_slices(like: Tensor, size: tuple[int, int], chunk: int | None) -> list[slice]:
    """Slices of ``chunk`` channels of ``like (N, K, h, w)``; None sizes them automatically."""
    batch, channels = like.shape[0], like.shape[1]
    if chunk is None:
        chunk = max(1, AUTO_CHUNK_VALUES // (batch * size[0] * size[1]))
    return [slice(start, start + chunk) for start in range(0, channels, chunk)]


def _upsample(t: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def _add_upsampled(
    sums: tuple[Tensor, Tensor] | None,
    act: Tensor,
    grad: Tensor,
    size: tuple[int, int],
    chunk: int | None,
) -> tuple[Tensor, Tensor]:
    """Running sums of upsampled activations and gradients, ``(N, K, H, W)`` each."""
    if sums is None:
        shape = (act.shape[0], act.shape[1], *size)
        sums = (act.new_zeros(shape), grad.new_zeros(shape))
    for part in _channel_slices(act, size, chunk):
        sums[0][:, part] += _upsample(act[:, part], size)
        sums[1][:, part] += _upsample(grad[:, part], size)
    return sums


def _combine(
    small: list[tuple[Tensor, Tensor]],
    sums: tuple[Tensor, Tensor] | None,
    size: tuple[int, int],
    n_scales: int,
    chunk: int | None,
) -> Tensor:
    """``sum_k mean_s up(A_s) * mean_s up(G_s)``, ``chunk`` channels at a time."""
    reference = small[0][0] if small else sums[0]  # type: ignore[index]
    cam = reference.new_zeros(reference.shape[0], *size)
    for part in _channel_slices(reference, size, chunk):
        mean_act = sums[0][:, part] if sums is not None else 0.0
        mean_grad = sums[1][:, part] if sums is not None else 0.0
        for act, grad in small:
            mean_act = mean_act + _upsample(act[:, part], size)
            mean_grad = mean_grad + _upsample(grad[:, part], size)
        cam += (mean_act * mean_grad).sum(1)  # type: ignore[union-attr]
    return cam / n_scales**2


def _normalise(cam: Tensor) -> Tensor:
    """Each map divided by its largest absolute value (all-zero maps stay zero)."""
    peak = cam.abs().flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(cam.dtype).tiny), cam)
