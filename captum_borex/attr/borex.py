"""BOREx: Bayesian-optimisation refinement of any saliency map, as a Captum attribution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from captum._utils.progress import progress
from captum._utils.typing import TargetType
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_borex._checks import (
    check_callable,
    check_int,
    format_baselines,
    format_inputs,
    layout_hint,
    refuse_under_noise_tunnel,
)
from captum_borex._forward import checked_target_scores
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved
from captum_borex.attr._map_check import checked_map
from captum_borex.attr._objective import (
    WindowObjective,
    keep_baselines_like,
    warn_if_baseline_is_the_target,
)
from captum_borex.attr._priors import PriorType, compute_prior, normalise_prior
from captum_borex.attr._window_args import (
    acquisition_stride,
    feature_names,
    field_cells,
    window_space,
)
from captum_borex.attr.fusion import rank_fusion
from captum_borex.attr.settings import BORExSettings, resolve_settings
from captum_borex.bo.field import FieldResult, FieldSettings, refine_field
from captum_borex.bo.optimizer import BOResult, BOSettings, optimise
from captum_borex.bo.windows import WindowSpace, smoothed_over_windows


@dataclass
class BORExDetails:
    """Everything a BOREx run produced, from ``attribute(..., return_details=True)``.

    Attributes:
        attributions: The saliency maps, exactly as ``attribute`` returns them (shaped
            like the inputs; a 1-tuple when the inputs were).
        prior: ``(N, *spatial)`` the normalised prior map (the model's prior mean, up to
            its fitted scale).
        uncertainty: ``(N, *spatial)`` how much is still unknown, in [0, 1] (1 where
            nothing was learnt), for every input alike: the window GP's posterior standard
            deviation rebuilt like the map, or the field's posterior standard deviation over
            its prior one, per cell.
        centres: ``(N, n, D)`` centre of every queried window (pixels; rows, columns or
            frames, rows, columns).
        half_sizes: ``(N, n, D)`` half-length along each axis of every queried window.
        scores: ``(N, n)`` the query results: the change of probability each window made
            (field), or ``tanh(gain * delta / 2)`` (windows).
        lengthscale: The model's fitted scales: field, ``(N, 3)`` its length scale
            (cells), amplitude and noise as picked; windows, ``(N, d)`` the GP's final
            length scales (GP units).
        seconds: Wall time of the run spent in the objective (perturbing inputs and the
            model calls) and in the optimiser (everything else), for profiling.
        evidence_maps: ``(N, *spatial)`` map of each kind of evidence the map is built
            from or chosen among (``settings.map_sources``; "prior" is the prior's own map,
            box-averaged by ``settings.prior_map_smoothing`` and rescaled to the evidence's
            mean absolute value), by name, in the units of the map: reweight them with
            :func:`~captum_borex.attr.rank_fusion` at no model call.
        gp_map: ``(N, *spatial)`` the model's own map: the field itself, or the window GP's
            posterior mean of ``settings.queries``' evidence rebuilt over pixels on its
            scale (``tanh(gain * delta / 2)``), before it is turned into a change of
            probability: for experts.
        settings: The :class:`BORExSettings` of the run.
        map_checks: ``(N,)`` each candidate's check by name, when ``settings.map_check``
            chose the map among several (``settings.check_candidates()``): the mean over the
            fractions of ``s(its top shown alone) - s(its top deleted)``; each input's map
            is the candidate with the highest. Empty otherwise.
    """

    attributions: Tensor | tuple[Tensor, ...]
    prior: Tensor
    uncertainty: Tensor
    centres: Tensor
    half_sizes: Tensor
    scores: Tensor
    lengthscale: Tensor
    seconds: dict[str, float]
    evidence_maps: dict[str, Tensor]
    gp_map: Tensor
    settings: BORExSettings
    map_checks: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class _Call:
    """One call's checked inputs."""

    inputs: Tensor
    is_tuple: bool
    space: WindowSpace
    baselines: Tensor
    keep_baselines: Tensor
    optimiser: BOSettings | FieldSettings

    def usable(self) -> _Call:
        """A copy of inference-mode tensors (e.g. under Lightning's validate): gradient
        priors and the GP fit need ordinary tensors."""
        if not self.inputs.is_inference():
            return self
        return replace(
            self,
            inputs=self.inputs.clone(),
            baselines=self.baselines.clone(),
            keep_baselines=self.keep_baselines.clone(),
        )


class BOREx(PerturbationAttribution):
    r"""BOREx (Kikuchi et al., ACCV 2022) refines a saliency map with Bayesian optimisation.

    Each query occludes one window two ways -- *delete* (the window set to the baseline) and
    *keep* (the window shown alone, on ``settings.keep_baselines``) -- and observes how the
    target's softmax probability ``s`` changes. The prior map is the prior mean of a Gaussian
    model updated by every query. Every setting of the algorithm lives in ``settings`` (a
    preset name or a :class:`BORExSettings`); ``attribute`` takes only what changes from call
    to call. With ``prior=None`` this is plain Bayesian-optimisation saliency (Mokuwe et al.,
    2020).

    Two models (``settings.surrogate``):

    - ``"windows"`` (both presets): a GP over the windows ``(r, c, l)`` themselves, queried
      by UCB, ``mu + kappa * sigma``; a map is the posterior mean averaged over every
      window covering each pixel, over all sizes. The default builds one such map from each
      kind of evidence the queries observe and keeps, per input, the one -- or the prior's
      own map -- whose top pixels best separate the target when shown alone and when
      deleted (``settings.map_check``).
    - ``"field"``: the input is cut into cells, each holding its contribution to the
      target's probability, and a query observes the sum over the cells its window covers;
      the prior map, scaled and shifted to fit, is the field's prior mean with a smooth
      residual on top, so the posterior is exact. Each round queries the window whose
      (focus-weighted) sum is most uncertain: large windows first, then smaller ones where
      the field is high. A detailed prior keeps its detail where the observations agree.

    **What the map means.** Positive is evidence for the target, negative against, in
    changes of the target's probability, comparable across images. With the default
    ``queries="both"`` a pixel's value estimates, averaged over the windows covering it, the
    mean of what the window adds to the probability when shown alone (on
    ``settings.keep_baselines``) and what it takes away when deleted: 0 for a window that
    does neither; the default's map check may pick, per input, the delete evidence (what
    the window takes away when deleted), the keep evidence (what it adds when shown alone)
    or the prior's own map instead, in the same units (the prior rescaled to the evidence's
    mean absolute value; ``BORExDetails.map_checks`` says which scored highest).
    With ``"field"`` a pixel's value is its share instead: the map summed over
    a region estimates what the region adds, and over the whole input about ``s(input) -
    s(keep baseline)``. Captum's ``visualize_image_attr`` reads either as is
    (``sign="positive"`` shows the evidence for the target). The model-scale quantities are
    in :class:`BORExDetails`.

    Every image of a batch is refined together: one batched model, one model call per step
    holding every image's queries. An image's map does not depend on the other images in
    its batch.

    Args:
        forward_func: The model (or any function) returning logits ``(N, K)``, or
            probabilities with ``settings.apply_softmax=False``.
        prior: The map to refine: a Captum attribution instance (gradient, layer or
            perturbation method, NoiseTunnel, this package's RISE or CAMERAS), a tensor of
            maps ``(N, H, W)``, ``(N, 1, H, W)``, input-shaped, or layer-sized ``(N, 1, h, w)``,
            a callable ``(inputs, target) -> maps``, or None for a flat prior.
            Default: None
        settings: A preset name -- "default" or "published" (the paper's loop exactly) --
            or a :class:`BORExSettings`. Default: "default"

    Examples::

        >>> from captum.attr import LayerGradCam
        >>> borex = BOREx(model, prior=LayerGradCam(model, model.layer4))
        >>> attributions = borex.attribute(images, target=labels, n_iter=50)
        >>> attributions.shape == images.shape
        True
        >>> published = BOREx(model, prior=LayerGradCam(model, model.layer4),
        ...                   settings="published")
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        prior: PriorType = None,
        settings: str | BORExSettings = "default",
    ) -> None:
        check_callable(forward_func, "forward_func")
        if isinstance(prior, type):
            raise TypeError(
                f"prior must be an instance, got the class {prior.__name__}: build it first, "
                f"e.g. prior={prior.__name__}(model, ...)"
            )
        if prior is not None and not (
            isinstance(prior, Tensor) or callable(prior) or hasattr(prior, "attribute")
        ):
            raise TypeError(
                "prior must be a Captum attribution, a tensor, a callable or None, "
                f"got {type(prior).__name__}"
            )
        resolved = resolve_settings(settings)
        if prior is None and resolved.map_from is not None and "prior" in resolved.map_sources:
            raise ValueError(
                f"settings.map_from={resolved.map_from!r} names 'prior', but this BOREx has "
                "no prior: pass prior=... (e.g. LayerGradCam(model, layer)) or drop 'prior' "
                "from map_from"
            )
        super().__init__(forward_func)
        self.prior = prior
        self._settings = resolved

    @property
    def settings(self) -> BORExSettings:
        """The algorithm's settings (read-only: build another BOREx to change them)."""
        return self._settings

    def calls_per_input(self, n_iter: int) -> int:
        """Model evaluations ``attribute`` makes per input for ``n_iter`` rounds, the
        prior's own not included (:meth:`BORExSettings.calls_per_input`, knowing whether
        this BOREx has a prior).

        Args:
            n_iter: BO rounds, as given to ``attribute``.

        Returns:
            Model evaluations per input (a clip's pass counts as one).

        Examples::

            >>> BOREx(model, prior=LayerGradCam(model, model.features[-1])).calls_per_input(40)
            98
        """
        return self._settings.calls_per_input(n_iter, prior=self.prior is not None)

    @classmethod
    def get_name(cls) -> str:
        return "BOREx"

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @refuse_under_noise_tunnel("return_details")
    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: float | Tensor | tuple[Tensor, ...] = 0.0,
        n_iter: int = 50,
        window_sizes: Sequence[int] | None = None,
        prior_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        internal_batch_size: int | None = None,
        return_details: bool = False,
        show_progress: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | BORExDetails:
        r"""Refine the prior's map of every input by ``n_iter`` rounds of window queries.

        Args:
            inputs: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` clips, or a tuple
                holding one such tensor (the output is then a tuple too). Clips are
                searched with spatio-temporal windows.
            target: Output index for which to explain: an int, a tensor of one index per
                input, a list of ints, or (for multi-dimensional outputs) a tuple / list of
                tuples, as in Captum. None only for models with one output per input.
                Default: None
            additional_forward_args: Extra arguments for ``forward_func`` after the
                inputs; tensors whose first dimension is N are indexed along with the
                inputs. Default: None
            baselines: What occluded pixels become: a number or a tensor broadcastable to
                the inputs, **in the model's input space** (for a model that normalises
                with ImageNet's mean and std, 0 is the mean colour, not black). A
                ``UserWarning`` says so when the model takes the baseline itself for the
                target (probability >= 0.5): the *keep* queries then say little.
                Default: 0.0
            n_iter: Number of BO rounds; each costs ``settings.windows_per_step`` windows
                per input, two model evaluations a window (one with ``queries="delete"``
                or ``"keep"``), plus two passes per input before the first round and the
                map check's after the last (:meth:`calls_per_input` counts them all:
                2 * n_iter + 18 with the default settings and a prior, 2 * n_iter + 14
                without one). Default: 50
            window_sizes: Window half-sizes in pixels. None scales the published
                (30, 45, 60, 75) for 224-pixel images to ``min(H, W)``. Default: None
            prior_kwargs: Keyword arguments for the prior's ``attribute`` (or callable),
                e.g. ``{"sliding_window_shapes": (3, 16, 16)}`` for Occlusion.
                Default: None
            seed: Makes the run reproducible bit for bit on CPU (also seeds a random
                prior such as RISE or Lime) without touching the global RNG. None draws
                one from the global RNG. Default: None
            internal_batch_size: Largest batch passed to the model at once, in every
                pass; None passes every query of a round together. Default: None
            return_details: Return a :class:`BORExDetails` (map, normalised prior,
                uncertainty, queried windows and scores, settings) instead of the
                attributions. Default: False
            show_progress: Show a progress bar over BO rounds. Default: False

        Returns:
            Tensor or tuple of one tensor, shaped like the inputs: the refined map,
            repeated over channels, in changes of the target's probability (see the class
            docstring). With ``return_details=True``, a :class:`BORExDetails`.

        Raises:
            ValueError: bad inputs (not 4-D or 5-D, NaN/Inf) or baselines (NaN/Inf), NaN/Inf
                model outputs (the inputs concerned named), target out of range, a prior
                that fails or whose maps do not match, ``n_iter < 1``, windows larger than
                the image or longer than the clip, or settings that do not fit the inputs.
        """
        call = self._check_call(inputs, baselines, n_iter, window_sizes, prior_kwargs, seed)
        if internal_batch_size is not None:
            check_int(internal_batch_size, "internal_batch_size")
        with (
            torch.inference_mode(False),
            preserved(modules_of(self.forward_func, self.prior), [call.inputs]),
            forked_rng(cuda_devices(call.inputs), seed, enabled=seed is not None),
        ):
            call = call.usable()
            run_seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)))
            objective = self._objective(call, target, additional_forward_args, internal_batch_size)
            raw_prior = compute_prior(
                self.prior,
                call.inputs,
                target,
                additional_forward_args,
                prior_kwargs,
                self.settings.prior_reduction,
            )
            prior = normalise_prior(raw_prior, self.settings.prior_scale)
            result = self._search(objective, prior, call, run_seed, show_progress, return_details)
            # The map check calls the model too.
            return self._outcome(call, objective, prior, result, return_details)

    def _check_call(
        self,
        inputs: Any,
        baselines: Any,
        n_iter: Any,
        window_sizes: Any,
        prior_kwargs: Any,
        seed: Any,
    ) -> _Call:
        """Check the per-call arguments against the settings; the window space."""
        x, is_tuple = format_inputs(inputs)
        check_int(n_iter, "n_iter")
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        if prior_kwargs is not None and not isinstance(prior_kwargs, dict):
            raise TypeError(
                f"prior_kwargs must be a dict or None, got {type(prior_kwargs).__name__}"
            )
        settings = self.settings
        if x.dim() == 4 and settings.temporal_window_sizes is not None:
            raise ValueError(
                "settings.temporal_window_sizes applies to clips (N, C, T, H, W) only; "
                "use settings.replace(temporal_window_sizes=None) for images"
            )
        try:
            space = window_space(tuple(x.shape[2:]), window_sizes, settings.temporal_window_sizes)
        except ValueError as err:
            raise ValueError(f"{err}{layout_hint(x)}") from None
        base = format_baselines(baselines, x)
        return _Call(
            inputs=x,
            is_tuple=is_tuple,
            space=space,
            baselines=base,
            keep_baselines=keep_baselines_like(settings.keep_baselines, base, x),
            optimiser=optimiser_settings(settings, space, n_iter),
        )

    def _objective(
        self, call: _Call, target: TargetType, args: Any, internal_batch_size: int | None
    ) -> WindowObjective:
        """Check the target on the inputs, warn about a baseline the model takes for the
        target, and build the window objective from those reference scores."""
        settings = self.settings
        x = call.inputs
        input_scores = checked_target_scores(
            self.forward_func, x, target, args, settings.apply_softmax, internal_batch_size
        )
        keep_scores = None
        if settings.apply_softmax and settings.queries != "delete":
            keep_scores = warn_if_baseline_is_the_target(
                self.forward_func,
                call.keep_baselines,
                target,
                args,
                internal_batch_size,
                only_keep_half=settings.queries == "both"
                and not torch.equal(call.keep_baselines, call.baselines),
            )
        return WindowObjective(
            self.forward_func,
            x,
            call.baselines,
            call.keep_baselines,
            target,
            args,
            call.space,
            settings.gain,
            settings.apply_softmax,
            internal_batch_size,
            settings.queries,
            input_scores,
            keep_scores,
            tuple(s for s in settings.sources(prior=False) if s != settings.queries),
            linear=settings.surrogate == "field",
        )

    def _search(
        self,
        objective: WindowObjective,
        prior: Tensor,
        call: _Call,
        run_seed: int,
        show_progress: bool,
        with_uncertainty: bool,
    ) -> BOResult | FieldResult:
        """The search itself, with an optional progress bar."""
        bar = None
        if show_progress:
            bar = progress(total=call.optimiser.n_iter, desc=f"{self.get_name()} attribution")
        try:
            if isinstance(call.optimiser, FieldSettings):
                return refine_field(
                    objective,
                    prior,
                    objective.total_effect(),
                    call.space,
                    call.optimiser,
                    on_step=bar.update if bar is not None else None,
                )
            return optimise(
                objective,
                prior,
                call.space,
                call.optimiser,
                torch.Generator().manual_seed(run_seed),
                on_step=bar.update if bar is not None else None,
                uncertainty=with_uncertainty,
            )
        finally:
            if bar is not None:
                bar.close()

    def _outcome(
        self,
        call: _Call,
        objective: WindowObjective,
        prior: Tensor,
        result: BOResult | FieldResult,
        return_details: bool,
    ) -> Tensor | tuple[Tensor, ...] | BORExDetails:
        """The map in changes of probability, shaped like the inputs (or the details)."""
        settings = self.settings
        sources = settings.sources(self.prior is not None)
        x = call.inputs
        if isinstance(result, FieldResult):
            evidence = {settings.queries: result.map.to(x.dtype)}
            gp_map, std_map, lengthscale = result.map, result.std_map, result.hyperparameters
        else:
            evidence = _window_evidence(objective, result, settings)
            if "prior" in sources:
                prior_map = smoothed_over_windows(prior, call.space, settings.prior_map_smoothing)
                evidence["prior"] = _in_units_of(prior_map, next(iter(evidence.values())))
            gp_map, std_map, lengthscale = result.mean_map, result.std_map, result.lengthscale
        checks: dict[str, Tensor] = {}
        if settings.check_candidates(self.prior is not None):
            maps, checks = checked_map(objective, evidence, *settings.check_fractions)
        else:
            maps = fused_map(evidence, sources)
        maps = maps.unsqueeze(1).expand_as(x).contiguous()
        attributions = (maps,) if call.is_tuple else maps
        if not return_details:
            return attributions
        return BORExDetails(
            attributions=attributions,
            prior=prior,
            uncertainty=cast(Tensor, std_map).to(x.dtype),
            centres=result.centres,
            half_sizes=result.half_sizes,
            scores=result.scores.to(x.dtype),
            lengthscale=lengthscale,
            seconds=result.seconds,
            evidence_maps=evidence,
            gp_map=gp_map.to(x.dtype),
            settings=settings,
            map_checks={name: value.to(x.dtype) for name, value in checks.items()},
        )


def _window_evidence(
    objective: WindowObjective, result: BOResult, settings: BORExSettings
) -> dict[str, Tensor]:
    """The window surrogate's map of each evidence in ``settings.map_sources``, in changes
    of probability."""
    extra = result.extra_size_maps
    extras = iter(extra.unbind(1) if extra is not None else ())
    return {
        name: objective.probability_change(
            name, result.size_maps if name == settings.queries else next(extras)
        ).to(objective.inputs.dtype)
        for name in settings.sources(prior=False)
    }


def _in_units_of(prior: Tensor, maps: Tensor) -> Tensor:
    """``prior`` rescaled, map by map, to the mean absolute value of ``maps``."""
    mean_abs = maps.abs().mean(tuple(range(1, maps.dim())), keepdim=True)
    return (normalise_prior(prior, 1.0) * mean_abs).to(maps.dtype)


def optimiser_settings(
    settings: BORExSettings, space: WindowSpace, n_iter: int
) -> BOSettings | FieldSettings:
    """The search's settings for ``n_iter`` rounds over ``space``.

    Raises:
        ValueError: length scales, jitter or strides that do not fit the inputs' axes.
    """
    if settings.surrogate == "field":
        cells = field_cells(space, settings.cells)
        stride = settings.acquisition_stride
        return FieldSettings(
            n_iter=n_iter,
            cells=cells,
            refit_every=settings.refit_every,
            acquisition_stride=(
                tuple(max(1, length // c) for length, c in zip(space.shape, cells))
                if stride is None
                else acquisition_stride(space, stride)
            ),
            smoothing=settings.smoothing,
            windows_per_step=settings.windows_per_step,
            focus=settings.focus,
        )
    for name in ("lengthscale", "jitter"):
        values = getattr(settings, name)
        if values is not None and len(values) != space.n_features:
            raise ValueError(
                f"settings.{name} needs {space.n_features} values {feature_names(space)} for "
                f"these inputs, got {len(values)}"
            )
    return BOSettings(
        n_iter=n_iter,
        kappa=settings.kappa,
        lengthscale=settings.lengthscale,
        lengthscale_bounds=settings.lengthscale_bounds,
        noise=settings.noise,
        jitter=settings.jitter,
        acquisition_stride=acquisition_stride(space, settings.acquisition_stride),
        refit_every=settings.refit_every,
        warm_start=settings.warm_start,
        windows_per_step=settings.windows_per_step,
        prior_mean=settings.prior_mean,
        exact_map=settings.exact_map,
        prior_fit=settings.prior_fit,
        prior_fit_strength=settings.prior_fit_strength,
        map_prior=settings.map_prior,
    )


def fused_map(evidence: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """One map from the evidence maps: the only one, or their weighted mean rank
    (:func:`~captum_borex.attr.rank_fusion`) carrying the first map's values -- the pixel
    ranked k-th by the fusion gets the first map's k-th value -- so the fused map keeps the
    units and sign of a single one."""
    maps = list(evidence.values())
    if len(maps) == 1:
        return maps[0]
    ranks = cast(Tensor, rank_fusion(maps, [weights[name] for name in evidence]))
    values = maps[0].flatten(1)
    order = ranks.flatten(1).argsort(dim=1, stable=True)
    out = torch.empty_like(values).scatter_(1, order, values.sort(1).values)
    return out.view_as(maps[0])
