"""The latent stage: a latent diffusion model redraws the region, guided by the classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.progress import progress
from torch import Tensor, nn

from captum_borex._checks import check_int, check_nonnegative, check_positive
from captum_borex._state import preserved
from captum_borex.counterfactual.pixel import check_share, pruned_direction, target_loss


class LatentDiffusionGenerator:
    r"""Redraw a region with a latent diffusion model, guided toward a target class.

    Built from ``diffusers`` parts: the input is encoded by ``vae``, noised to
    ``strength`` of the schedule, and denoised by ``unet`` with ``scheduler``. After each
    denoising step the classifier's gradient toward the target -- taken on the decoded
    estimate of the clean image, pruned to its largest entries inside the region's latent
    cells as in the pixel stage -- moves the latent, and the latent outside the region is
    replaced by the input's latent noised to the same level (RePaint-style), so the model
    only redraws the region. The decoded image is blended into the input with the region,
    softened by ``feather`` pixels at its border to avoid seams: pixels farther than
    ``feather`` from the region are the input's.

    Needs ``pip install captum-borex[diffusion]``. Load trained parts from a local path,
    e.g. ``AutoencoderKL.from_pretrained(path)``; any diffusers scheduler works (DDIM,
    DDPM, Euler, ...). Images only (``(N, C, H, W)``).

    Args:
        vae: An ``AutoencoderKL``-like model: ``encode(x).latent_dist`` (or ``.latents``)
            and ``decode(z).sample``, trained on images scaled to [-1, 1].
        unet: A noise-prediction model called as ``unet(z, t, **unet_kwargs).sample``
            (``UNet2DModel``; ``UNet2DConditionModel`` with ``encoder_hidden_states`` in
            ``unet_kwargs``).
        scheduler: Any diffusers scheduler; a fresh copy is made for every call.
        strength: Share of the schedule the input is noised to, in (0, 1]. Default: 0.5
        n_steps: Steps of the full schedule (``strength * n_steps`` are run). Default: 20
        guidance: Largest change of a latent entry per step from the classifier's
            gradient. Default: 0.1
        keep: Share of the region's latent gradient entries kept per step. Default: 0.2
        feather: Width in pixels of the soft border of the pixel-space blend; 0 for a hard
            region. Default: 1
        pixel_range: The classifier's input range, mapped to the VAE's [-1, 1].
            Default: (0.0, 1.0)
        scaling_factor: Latent scaling; None for ``vae.config.scaling_factor`` (or 1).
            Default: None
        unet_kwargs: Extra keywords for every ``unet`` call. Default: None

    Raises:
        TypeError: a part lacks the methods above.
        ValueError: an option is out of range.

    Examples::

        >>> from diffusers import AutoencoderKL, UNet2DModel, DDIMScheduler
        >>> generator = LatentDiffusionGenerator(
        ...     AutoencoderKL.from_pretrained("./vae"), UNet2DModel.from_pretrained("./unet"),
        ...     DDIMScheduler.from_pretrained("./scheduler"), strength=0.6)
        >>> explainer = RegionCounterfactual(model, LayerGradCam(model, layer), generator)
    """

    def __init__(
        self,
        vae: nn.Module,
        unet: nn.Module,
        scheduler: Any,
        strength: float = 0.5,
        n_steps: int = 20,
        guidance: float = 0.1,
        keep: float = 0.2,
        feather: int = 1,
        pixel_range: tuple[float, float] = (0.0, 1.0),
        scaling_factor: float | None = None,
        unet_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _check_parts(vae, unet, scheduler)
        self.vae, self.unet, self.scheduler = vae, unet, scheduler
        self.strength = check_share(strength, "strength")
        self.n_steps = check_int(n_steps, "n_steps")
        self.guidance = check_nonnegative(guidance, "guidance")
        self.keep = check_share(keep, "keep")
        self.feather = check_int(feather, "feather", minimum=0)
        low, high = pixel_range
        if not low < high:
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {pixel_range}")
        self.pixel_range = (float(low), float(high))
        config = getattr(vae, "config", None)
        default_scale = getattr(config, "scaling_factor", None) or 1.0
        self.scaling_factor = check_positive(scaling_factor or default_scale, "scaling_factor")
        self.unet_kwargs = dict(unet_kwargs or {})
        self.last_steps = 0

    def modules(self) -> list[nn.Module]:
        """The generator's models (left as they were by every call)."""
        return [self.vae, self.unet]

    def generate(
        self,
        forward_func: Callable[..., Tensor],
        inputs: Tensor,
        target: Tensor,
        region: Tensor,
        additional_forward_args: Any = None,
        show_progress: bool = False,
    ) -> Tensor:
        """The inputs with their region redrawn toward ``target`` (same shape).

        Args:
            forward_func: The classifier.
            inputs: ``(N, C, H, W)`` images in ``pixel_range``.
            target: ``(N,)`` target classes.
            region: Boolean ``(N, 1, H, W)`` region.
            additional_forward_args: Extra arguments for ``forward_func``. Default: None
            show_progress: Show a progress bar over denoising steps. Default: False

        Raises:
            ValueError: the inputs are not images.
        """
        if inputs.dim() != 4:
            raise ValueError(
                "LatentDiffusionGenerator works on images (N, C, H, W), got shape "
                f"{tuple(inputs.shape)}; use no generator for clips"
            )
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        soft = _feathered(region, self.feather).to(inputs.dtype)
        with preserved(self.modules()):
            self.vae.eval()
            self.unet.eval()
            with torch.no_grad():
                clean = self._encode(inputs)
            cells = F.adaptive_max_pool2d(region.to(clean.dtype), clean.shape[-2:]) > 0
            timesteps = _start_schedule(scheduler, self.n_steps, self.strength, clean.device)
            noise = torch.randn_like(clean)
            latent = scheduler.add_noise(clean, noise, timesteps[:1].repeat(len(clean)))
            steps = progress(timesteps, desc="Latent stage") if show_progress else timesteps
            for i, t in enumerate(steps):
                latent = self._step(
                    scheduler,
                    latent,
                    t,
                    forward_func,
                    inputs,
                    soft,
                    target,
                    cells,
                    additional_forward_args,
                )
                later = timesteps[i + 1 : i + 2].repeat(len(clean))
                outside = scheduler.add_noise(clean, noise, later) if len(later) else clean
                latent = torch.where(cells, latent, outside)
            self.last_steps = len(timesteps)
            with torch.no_grad():
                decoded = self._decode(latent)
        return soft * decoded + (1 - soft) * inputs

    def _step(
        self,
        scheduler: Any,
        latent: Tensor,
        t: Tensor,
        forward_func: Callable[..., Tensor],
        inputs: Tensor,
        soft: Tensor,
        target: Tensor,
        cells: Tensor,
        args: Any,
    ) -> Tensor:
        """One denoising step followed by the classifier's pruned guidance."""
        with torch.no_grad():
            model_input = scheduler.scale_model_input(latent, t)
            eps = self.unet(model_input, t, **self.unet_kwargs).sample
            out = scheduler.step(eps, t, latent)
        estimate = getattr(out, "pred_original_sample", None)
        estimate = (out.prev_sample if estimate is None else estimate).detach().requires_grad_()
        with torch.enable_grad():
            shown = soft * self._decode(estimate) + (1 - soft) * inputs
            loss, _ = target_loss(forward_func, shown, target, args)
            (grad,) = torch.autograd.grad(loss, estimate)
        return out.prev_sample - self.guidance * pruned_direction(grad, cells, self.keep)

    def _encode(self, x: Tensor) -> Tensor:
        low, high = self.pixel_range
        encoded = self.vae.encode((x - low) / (high - low) * 2 - 1)
        dist = getattr(encoded, "latent_dist", None)
        latent = dist.mode() if dist is not None else getattr(encoded, "latents", encoded)
        return latent * self.scaling_factor

    def _decode(self, latent: Tensor) -> Tensor:
        low, high = self.pixel_range
        image = self.vae.decode(latent / self.scaling_factor).sample.clamp(-1, 1)
        return (image + 1) / 2 * (high - low) + low


def _start_schedule(scheduler: Any, n_steps: int, strength: float, device: torch.device) -> Tensor:
    """Set ``n_steps`` on ``scheduler`` and return the last ``strength`` of its timesteps."""
    scheduler.set_timesteps(n_steps, device=device)
    run = max(1, round(n_steps * strength))
    begin = (n_steps - run) * getattr(scheduler, "order", 1)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def _feathered(region: Tensor, width: int) -> Tensor:
    """The region as weights in [0, 1]: 1 inside, falling off over ``width`` pixels."""
    soft = region.float()
    if width == 0:
        return soft
    size = 2 * width + 1
    blurred = F.avg_pool2d(soft, size, stride=1, padding=width, count_include_pad=False)
    return torch.maximum(soft, blurred)


def _check_parts(vae: Any, unet: Any, scheduler: Any) -> None:
    """TypeErrors naming the part that lacks what the generator calls."""
    for name, obj, needs in (
        ("vae", vae, ("encode", "decode")),
        ("unet", unet, ("__call__",)),
        ("scheduler", scheduler, ("set_timesteps", "step", "add_noise", "scale_model_input")),
    ):
        missing = [m for m in needs if not callable(getattr(obj, m, None))]
        if missing:
            raise TypeError(
                f"{name} must be a diffusers-style part with {', '.join(needs)}; "
                f"{type(obj).__name__} lacks {', '.join(missing)}"
            )
    if not hasattr(scheduler, "config"):
        raise TypeError(
            f"scheduler must be a diffusers scheduler (with .config), got {scheduler!r}"
        )
