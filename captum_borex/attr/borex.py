"""BOREx: Bayesian-optimisation refinement of any saliency map, as a Captum attribution."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from captum._utils.progress import progress
from captum._utils.typing import TargetType
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_borex._checks import (
    check_callable,
    check_choice,
    check_finite,
    check_int,
    check_nonnegative,
    check_positive,
    format_baselines,
    format_inputs,
)
from captum_borex._forward import checked_target_scores, target_scores
from captum_borex._state import modules_of, preserved
from captum_borex._substrates import Substrate, make_substrate
from captum_borex.attr._priors import (
    REDUCTIONS,
    ChannelReduction,
    PriorType,
    compute_prior,
    normalise_prior,
)
from captum_borex.attr._window_args import acquisition_stride as stride_for
from captum_borex.attr._window_args import feature_names, window_space
from captum_borex.attr.fusion import rank_fusion
from captum_borex.bo.optimizer import BOSettings, optimise
from captum_borex.bo.windows import WindowSpace


@dataclass
class BORExDetails:
    """Everything a BOREx run produced, from ``attribute(..., return_details=True)``.

    Attributes:
        attributions: The saliency maps, exactly as ``attribute`` returns them (shaped
            like the inputs; a 1-tuple when the inputs were).
        prior: ``(N, *spatial)`` the normalised prior map (the GP's prior mean).
        uncertainty: ``(N, *spatial)`` posterior standard deviation rebuilt like the map
            (>= 0): where the refined map is least certain.
        centres: ``(N, n, D)`` centre of every queried window (pixels; rows, columns or
            frames, rows, columns).
        half_sizes: ``(N, n, D)`` half-length along each axis of every queried window.
        scores: ``(N, n)`` the query results ``tanh(gain * delta / 2)``.
        lengthscale: ``(N, d)`` the GP's final length scales (GP units).
        seconds: Wall time of the run spent in the objective (perturbing inputs and the
            model calls) and in the optimiser (everything else), for profiling.
        evidence_maps: ``(N, *spatial)`` map of each kind of evidence named by
            ``map_from`` (or ``queries``), by name, before they are fused: reweight them
            with :func:`~captum_borex.attr.rank_fusion` at no model call.
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


class BOREx(PerturbationAttribution):
    r"""BOREx (Kikuchi et al., ACCV 2022) refines a saliency map with Bayesian optimisation.

    The prior map becomes the mean of a Gaussian process over occlusion windows ``(r, c, l)``
    (centre and half-size). Each query occludes one window two ways -- *delete* (window set
    to the baseline) and *keep* (everything else set to the baseline, or to
    ``keep_baselines``) -- and observes ``y = tanh(gain * (s(keep) - s(delete)) / 2)`` with
    ``s`` the target's softmax probability. Windows are chosen by UCB, ``mu + kappa *
    sigma``; the saliency map is the posterior mean averaged over every window covering each
    pixel, over all sizes. With
    ``prior=None`` this is plain Bayesian-optimisation saliency (Mokuwe et al., 2020).

    Every image of a batch is refined together: one batched GP, one model call per step
    holding every image's queries. An image's map does not depend on the other images in
    its batch.

    Args:
        forward_func: The model (or any function) returning logits ``(N, K)``, or
            probabilities with ``apply_softmax=False``.
        prior: The map to refine: a Captum attribution instance (gradient, layer or
            perturbation method, NoiseTunnel, this package's RISE or CAMERAS), a tensor of
            maps ``(N, H, W)``, ``(N, 1, H, W)``, input-shaped, or layer-sized ``(N, 1, h, w)``,
            a callable ``(inputs, target) -> maps``, or None for a flat prior.
            Default: None

    Examples::

        >>> from captum.attr import LayerGradCam
        >>> borex = BOREx(model, prior=LayerGradCam(model, model.layer4))
        >>> attributions = borex.attribute(images, target=labels, n_iter=50)
        >>> attributions.shape == images.shape
        True
    """

    def __init__(self, forward_func: Callable[..., Tensor], prior: PriorType = None) -> None:
        check_callable(forward_func, "forward_func")
        if prior is not None and not (
            isinstance(prior, Tensor) or callable(prior) or hasattr(prior, "attribute")
        ):
            raise TypeError(
                "prior must be a Captum attribution, a tensor, a callable or None, "
                f"got {type(prior).__name__}"
            )
        super().__init__(forward_func)
        self.prior = prior

    @classmethod
    def get_name(cls) -> str:
        return "BOREx"

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

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
        return_details: bool = False,
        show_progress: bool = False,
        *,
        apply_softmax: bool = True,
        prior_scale: float = 0.1,
        prior_reduction: ChannelReduction = "sum",
        prior_mean: Literal["center", "window"] = "center",
        gain: float = 3.0,
        kappa: float = 10.0,
        lengthscale: Sequence[float] | None = None,
        lengthscale_bounds: tuple[float, float] = (1.0, 20.0),
        noise: float = 0.01,
        jitter: Sequence[float] | None = None,
        acquisition_stride: int | Sequence[int] | None = None,
        temporal_window_sizes: Sequence[int] | None = None,
        refit_every: int = 5,
        warm_start: bool = True,
        windows_per_step: int = 1,
        exact_map: bool = False,
        internal_batch_size: int | None = None,
        prior_fit: Literal["fixed", "affine"] = "affine",
        prior_fit_strength: float = 1.0,
        map_prior: Literal["smoothed", "sharp"] = "sharp",
        queries: Literal["both", "delete", "keep"] = "both",
        keep_baselines: Substrate | tuple[Tensor, ...] | None = None,
        map_from: str | Sequence[str] | Mapping[str, float] | None = None,
    ) -> Tensor | tuple[Tensor, ...] | BORExDetails:
        r"""Refine the prior's map of every input by ``n_iter`` rounds of window queries.

        Args:
            inputs: ``(N, C, H, W)`` images or ``(N, C, T, H, W)`` clips, or a tuple
                holding one such tensor (the output is then a tuple too). Clips are
                searched with spatio-temporal windows (see ``temporal_window_sizes``).
            target: Output index for which to explain: an int, a tensor of one index per
                input, a list of ints, or (for multi-dimensional outputs) a tuple / list of
                tuples, as in Captum. None only for models with one output per input.
                Default: None
            additional_forward_args: Extra arguments for ``forward_func`` after the
                inputs; tensors whose first dimension is N are indexed along with the
                inputs. Default: None
            baselines: What occluded pixels become: a number or a tensor broadcastable to
                the inputs (in the model's input space). A ``UserWarning`` says so when
                the model gives the baseline itself probability >= 0.5 for the target:
                every window's *keep* query then scores high and the map says little.
                Default: 0.0
            n_iter: Number of BO rounds; each costs two model evaluations per window per
                input (one with ``queries="delete"`` or ``"keep"``). Default: 50
            window_sizes: Window half-sizes in pixels. None scales the published
                (30, 45, 60, 75) for 224-pixel images to ``min(H, W)``. Default: None
            prior_kwargs: Keyword arguments for the prior's ``attribute`` (or callable),
                e.g. ``{"sliding_window_shapes": (3, 16, 16)}`` for Occlusion.
                Default: None
            seed: Makes the run reproducible bit for bit on CPU (also seeds a random
                prior such as RISE or Lime) without touching the global RNG. None draws
                one from the global RNG. Default: None
            return_details: Return a :class:`BORExDetails` (map, normalised prior,
                uncertainty, queried windows and scores) instead of the attributions.
                Default: False
            show_progress: Show a progress bar over BO rounds. Default: False
            apply_softmax: Score windows by the target's softmax probability (published);
                False uses the raw output, for models that already return probabilities.
                Default: True
            prior_scale: The prior is scaled to mean absolute value ``prior_scale``.
                Default: 0.1
            prior_reduction: How a channel map becomes one value per pixel: "sum",
                "mean", "abs_sum", "max_abs", "l2" or a callable ``(N, C, H, W) -> (N, H, W)``.
                Default: "sum"
            prior_mean: GP prior mean of a window: the prior at its centre ("center",
                published) or averaged over it ("window"). Default: "center"
            gain: Slope of ``y = tanh(gain * delta / 2)``, where ``delta`` is a change of
                the target's probability (see ``queries``). The published 10 saturates
                above ``|delta|`` of about 0.3, so windows that remove a confident model's
                score to very different degrees look alike; 3 keeps them apart over the
                whole range. Default: 3.0 (published: 10.0)
            kappa: UCB exploration weight. Default: 10.0
            lengthscale: Initial length scales, one per GP feature -- images: (rows,
                columns, size); clips: (frames, rows, columns, duration, size) -- in units
                of a 224-pixel image (time: of a 224-frame clip). None: 12 for positions,
                10 for sizes, i.e. (12, 12, 10) for images. Default: None
            lengthscale_bounds: Bounds of every length scale. Default: (1.0, 20.0)
            noise: Observation noise variance. Default: 0.01
            jitter: Half-widths of the uniform jitter added to the GP's copy of each
                window, per feature. None: 1 for positions, 0.5 for sizes. Default: None
            acquisition_stride: UCB is evaluated on window centres this many pixels (and
                frames) apart -- one int, or one per axis -- then refined at full
                resolution around the best one; the map is rebuilt from the same lattice by
                linear interpolation. 1 reproduces the published full grid. None:
                ``round(min(H, W) / 56)`` (4 at 224) in space and ``round(T / 16)`` in time,
                coarsened in space until the lattice holds at most 25,000 windows.
                Default: None
            temporal_window_sizes: Clips only: window half-lengths in frames. None:
                ``T * (1/8, 1/4)`` rounded. Default: None
            refit_every: Refit the length scales after every this many rounds (always
                after the last). 1 is published. Default: 5
            warm_start: Start each refit from the previous length scales rather than the
                initial ones (published: False). Default: True
            windows_per_step: Windows queried per round (the GP's mean is held fixed
                between the picks of one round). Default: 1
            exact_map: Rebuild the map from the posterior at every window (published)
                instead of interpolating it from the acquisition lattice (which differs by
                about 0.1% of the map's range at 224x224, see ``benchmarks/speed.py``).
                Default: False
            internal_batch_size: Largest batch passed to the model at once, in every pass
                (the checks before the first window too); None passes every query of a round
                together (2 * N * windows_per_step with the default
                ``queries``). Default: None
            prior_fit: The GP's prior mean of a window: the normalised prior ("fixed",
                published) or ``a[size] + b * prior`` with an offset per window size and a
                slope ``b >= 0`` refitted to each image's observations after every round
                ("affine"), so that a prior of the wrong scale neither swamps the
                observations nor is swamped by them, and the size of a window (which moves
                its score wherever it is) is not mistaken for disagreement with the prior.
                Default: "affine"
            prior_fit_strength: With ``prior_fit="affine"``, how many observations' weight
                pulls the offsets towards 0 and the slope towards 1 (published). Default: 1.0
            map_prior: The prior's part of the map: box-averaged over windows like the
                GP's correction ("smoothed", published) or the (fitted) prior map itself
                ("sharp"), so a detailed prior keeps its detail where the observations do
                not change it. "smoothed" suits a coarse prior such as a deep network's
                Grad-CAM, whose box average ranks whole object regions first (see the README's
                *Quality*). Default: "sharp"
            queries: What one window costs and observes: "both" (published) scores the
                *delete* and the *keep* input, ``delta = s(keep) - s(delete)``; "delete" only
                the first, ``delta = s(input) - s(delete)``, and "keep" only the second,
                ``delta = s(keep) - s(baseline)``, at one model evaluation per window, so
                the same budget buys twice the windows. The reference score comes from the
                passes made before the first window: the target check scores the input, and
                the baseline warning (or, with ``apply_softmax=False``, one more pass)
                scores the baseline. "delete" makes no keep queries, so it skips the
                baseline warning. Default: "both"
            keep_baselines: What surrounds a kept window in a *keep* query: None for
                ``baselines`` (published), or what ``insertion_auc`` accepts as its
                substrate -- "blur" (a Gaussian blur of each input, kernel 11, sigma 5, the
                canvas of RISE's insertion measure), "mean", "zeros", a number, a tensor
                broadcastable to the inputs or a callable ``inputs -> tensor``. The
                baseline warning then checks these. Default: None
            map_from: Which observations the map is built from: None for those the GP is
                fitted to (``queries``, published), or one or several of "both" (``s(keep) -
                s(delete)``), "delete" (``s(input) - s(delete)``) and "keep" (``s(keep) -
                s(baseline)``) that the queries observe ("both" and "keep" need keep
                queries, "both" and "delete" delete queries). Each is rebuilt as a map from
                the same windows and length scales with its own fitted prior mean, at no
                extra model call (the reference scores come from the passes made before
                the first window). Several are combined by averaging each pixel's rank
                within its input (0 for the lowest pixel, 1 for the highest;
                :func:`~captum_borex.attr.rank_fusion`), so the map then lies in [0, 1]; a
                mapping such as ``{"both": 1, "delete": 3}`` weights the average (positive
                weights; a sequence weights all alike). ``return_details=True`` gives each
                one in ``evidence_maps``, to reweight at no model call. With
                ``keep_baselines="blur"``, ``("both", "delete")`` ranks first the pixels
                that both kinds of evidence put high: on photos it won back part of the
                deletion that the blurred keep queries cost and kept most of their
                insertion, and a larger weight on "delete" trades more insertion for
                deletion; on the synthetic shapes it cost deletion (see the README's
                *Quality*). The search follows ``queries`` whatever this says.
                Default: None

            ``prior_fit="fixed", map_prior="smoothed", gain=10.0`` is the published
            algorithm (the speed options aside); the defaults keep a strong prior from being
            degraded and a weak one from dominating (``benchmarks/quality.py`` measures both).

        Returns:
            Tensor or tuple of one tensor, shaped like the inputs: the refined map,
            repeated over channels. With ``return_details=True``, a :class:`BORExDetails`.

        Raises:
            ValueError: bad inputs (not 4-D or 5-D, NaN/Inf), target out of range, a prior
                that fails or whose maps do not match, ``n_iter < 1``, windows larger than
                the image or longer than the clip, or an invalid hyperparameter.
        """
        x, is_tuple = format_inputs(inputs)
        space = window_space(tuple(x.shape[2:]), window_sizes, temporal_window_sizes)
        settings = self._settings(
            space,
            n_iter,
            prior_mean,
            kappa,
            lengthscale,
            lengthscale_bounds,
            noise,
            jitter,
            acquisition_stride,
            refit_every,
            warm_start,
            windows_per_step,
            exact_map,
            prior_fit,
            prior_fit_strength,
            map_prior,
        )
        prior_scale = check_positive(prior_scale, "prior_scale")
        gain = check_positive(gain, "gain")
        check_choice(queries, "queries", QUERIES)
        sources = _map_sources(map_from, queries)
        if not (callable(prior_reduction) or prior_reduction in REDUCTIONS):
            raise ValueError(
                f"prior_reduction must be one of {REDUCTIONS} or a callable, "
                f"got {prior_reduction!r}"
            )
        if prior_kwargs is not None and not isinstance(prior_kwargs, dict):
            raise TypeError(
                f"prior_kwargs must be a dict or None, got {type(prior_kwargs).__name__}"
            )
        if internal_batch_size is not None:
            check_int(internal_batch_size, "internal_batch_size")
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        base = format_baselines(baselines, x)
        keep_base = _keep_baselines(keep_baselines, base, x)

        with torch.inference_mode(False), preserved(modules_of(self.forward_func, self.prior), [x]):
            # Under inference mode (e.g. Lightning's validate) gradient priors and the GP fit
            # need ordinary tensors.
            if x.is_inference():
                x, base, keep_base = x.clone(), base.clone(), keep_base.clone()
            with torch.random.fork_rng(devices=_cuda_devices(x), enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                run_seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)))
                input_scores = checked_target_scores(
                    self.forward_func,
                    x,
                    target,
                    additional_forward_args,
                    apply_softmax,
                    internal_batch_size,
                )
                keep_scores = None
                if apply_softmax and queries != "delete":
                    keep_scores = _warn_if_baseline_is_the_target(
                        self.forward_func,
                        keep_base,
                        target,
                        additional_forward_args,
                        internal_batch_size,
                        only_keep_half=queries == "both" and not torch.equal(keep_base, base),
                    )
                raw_prior = compute_prior(
                    self.prior, x, target, additional_forward_args, prior_kwargs, prior_reduction
                )
            prior = normalise_prior(raw_prior, prior_scale)
            objective = _WindowObjective(
                self.forward_func,
                x,
                base,
                keep_base,
                target,
                additional_forward_args,
                space,
                gain,
                apply_softmax,
                internal_batch_size,
                queries,
                input_scores,
                keep_scores,
                tuple(s for s in sources if s != queries),
            )
            generator = torch.Generator().manual_seed(run_seed)
            bar = (
                progress(total=n_iter, desc=f"{self.get_name()} attribution")
                if show_progress
                else None
            )
            try:
                result = optimise(
                    objective,
                    prior,
                    space,
                    settings,
                    generator,
                    on_step=bar.update if bar is not None else None,
                    uncertainty=return_details,
                )
            finally:
                if bar is not None:
                    bar.close()

        evidence = _evidence_maps(result.mean_map, result.extra_maps, sources, queries)
        maps = (
            cast(Tensor, rank_fusion(list(evidence.values()), list(sources.values())))
            if len(evidence) > 1
            else next(iter(evidence.values()))
        )
        maps = maps.to(x.dtype).unsqueeze(1).expand_as(x).contiguous()
        attributions = (maps,) if is_tuple else maps
        if not return_details:
            return attributions
        return BORExDetails(
            attributions=attributions,
            prior=prior,
            uncertainty=cast(Tensor, result.std_map).to(x.dtype),
            centres=result.centres,
            half_sizes=result.half_sizes,
            scores=result.scores.to(x.dtype),
            lengthscale=result.lengthscale,
            seconds=result.seconds,
            evidence_maps={name: m.to(x.dtype) for name, m in evidence.items()},
        )

    def _settings(
        self,
        space: WindowSpace,
        n_iter: int,
        prior_mean: str,
        kappa: float,
        lengthscale: Sequence[float] | None,
        lengthscale_bounds: tuple[float, float],
        noise: float,
        jitter: Sequence[float] | None,
        acquisition_stride: int | Sequence[int] | None,
        refit_every: int,
        warm_start: bool,
        windows_per_step: int,
        exact_map: bool,
        prior_fit: str,
        prior_fit_strength: float,
        map_prior: str,
    ) -> BOSettings:
        check_int(n_iter, "n_iter")
        check_choice(prior_mean, "prior_mean", ("center", "window"))
        check_choice(prior_fit, "prior_fit", ("fixed", "affine"))
        check_choice(map_prior, "map_prior", ("smoothed", "sharp"))
        check_positive(prior_fit_strength, "prior_fit_strength")
        check_nonnegative(kappa, "kappa")
        check_positive(noise, "noise")
        check_int(refit_every, "refit_every")
        check_int(windows_per_step, "windows_per_step")
        lo, hi = (float(v) for v in lengthscale_bounds)
        if not 0 < lo <= hi:
            raise ValueError(
                f"lengthscale_bounds must satisfy 0 < lower <= upper, got {lengthscale_bounds}"
            )
        for name, values in (("lengthscale", lengthscale), ("jitter", jitter)):
            if values is not None and len(values) != space.n_features:
                raise ValueError(
                    f"{name} needs {space.n_features} values {feature_names(space)}, "
                    f"got {len(values)}"
                )
        return BOSettings(
            n_iter=n_iter,
            kappa=float(kappa),
            lengthscale=lengthscale,
            lengthscale_bounds=(lo, hi),
            noise=float(noise),
            jitter=jitter,
            acquisition_stride=stride_for(space, acquisition_stride),
            refit_every=refit_every,
            warm_start=bool(warm_start),
            windows_per_step=windows_per_step,
            prior_mean=prior_mean,
            exact_map=bool(exact_map),
            prior_fit=prior_fit,
            prior_fit_strength=float(prior_fit_strength),
            map_prior=map_prior,
        )


#: A baseline the model gives at least this probability of the target makes the keep queries
#: uninformative.
BASELINE_WARNING_PROBABILITY = 0.5


def _warn_if_baseline_is_the_target(
    forward_func: Callable[..., Tensor],
    base: Tensor,
    target: TargetType,
    args: Any,
    internal_batch_size: int | None,
    only_keep_half: bool = False,
) -> Tensor:
    """Warn when the baseline alone already scores the target highly: every *keep* query
    (the window on the baseline) then scores high wherever the window is.

    ``only_keep_half`` says that ``base`` is the keep baselines of queries that also delete
    the window onto other baselines: the delete half still informs the map, and the warning
    says so.

    Returns:
        ``(N,)`` the target's probability for each input's baseline.
    """
    batch = base.shape[0]
    rows = torch.arange(batch, device=base.device)
    probability = target_scores(
        forward_func, base, rows, target, args, batch, True, internal_batch_size
    )
    high = probability >= BASELINE_WARNING_PROBABILITY
    if bool(high.any()):
        opening = (
            f"the baseline alone gets probability >= {BASELINE_WARNING_PROBABILITY} for the "
            "target on some inputs: BOREx's keep queries score high wherever the window is"
        )
        if only_keep_half:
            advice = (
                " (here the keep_baselines), so only the delete half of each query informs "
                "those maps; queries='delete' buys them twice the windows for the same calls, "
                "or pass keep_baselines that the model does not take for the target"
            )
        else:
            advice = (
                ", so their maps carry little information; pass baselines (or keep_baselines) "
                "that the model does not take for the target (e.g. the mean image)"
            )
        warnings.warn(
            opening + advice + ", or check which inputs with the model's output on them",
            UserWarning,
            stacklevel=4,
        )
    return probability


#: What a window query evaluates (see ``queries`` in :meth:`BOREx.attribute`).
QUERIES = ("both", "delete", "keep")
#: The perturbed inputs each kind of evidence needs: deleted and / or kept windows.
NEEDS = {"both": {"delete", "keep"}, "delete": {"delete"}, "keep": {"keep"}}


def _map_sources(map_from: Any, queries: str) -> dict[str, float]:
    """The evidence the map is built from, with its weight (see ``map_from`` in
    :meth:`BOREx.attribute`).

    Raises:
        TypeError: not None, a string, a sequence of strings or a mapping from strings to
            numbers.
        ValueError: an unknown or repeated name, a weight that is not positive, or evidence
            the queries do not observe.
    """
    if map_from is None:
        return {queries: 1.0}
    pairs: list[tuple[Any, float]] | None = None
    if isinstance(map_from, Mapping):
        pairs = [(n, check_positive(w, f"map_from[{n!r}]")) for n, w in map_from.items()]
    elif isinstance(map_from, str):
        pairs = [(map_from, 1.0)]
    elif isinstance(map_from, Sequence):
        pairs = [(n, 1.0) for n in map_from]
    if pairs is None or not all(isinstance(n, str) for n, _ in pairs):
        raise TypeError(
            "map_from must be None, a string, a sequence of strings or a mapping from "
            f"strings to weights, got {map_from!r}"
        )
    weights = dict(pairs)
    if len(weights) == 0 or len(weights) != len(pairs):
        raise ValueError(f"map_from must name each evidence once, got {map_from!r}")
    for name in weights:
        check_choice(name, "map_from", QUERIES)
        if not NEEDS[name] <= NEEDS[queries]:
            raise ValueError(
                f"map_from={name!r} needs {' and '.join(sorted(NEEDS[name]))} queries, but "
                f"queries={queries!r} makes only {' and '.join(sorted(NEEDS[queries]))} queries"
            )
    return weights


def _evidence_maps(
    mean_map: Tensor, extra_maps: Tensor | None, sources: dict[str, float], queries: str
) -> dict[str, Tensor]:
    """Each source's map, in ``sources``' order: the GP's own for ``queries``, the rebuilt
    extra observations for the others."""
    extras = iter(extra_maps.unbind(1) if extra_maps is not None else ())
    return {source: mean_map if source == queries else next(extras) for source in sources}


def _keep_baselines(keep_baselines: Any, baselines: Tensor, inputs: Tensor) -> Tensor:
    """The background of every keep query, shaped like ``inputs``."""
    if keep_baselines is None:
        return baselines
    if isinstance(keep_baselines, (str, Tensor)) or callable(keep_baselines):
        out = make_substrate(keep_baselines, inputs, "keep_baselines")
        check_finite(out, "keep_baselines")
        return out
    return format_baselines(keep_baselines, inputs, "keep_baselines")


class _WindowObjective:
    """Scores windows: ``tanh(gain * delta / 2)`` for each image's windows, where ``delta``
    is ``s(keep) - s(delete)`` (``"both"``), ``s(input) - s(delete)`` (``"delete"``) or
    ``s(keep) - s(baseline)`` (``"keep"``). A deleted window becomes ``baselines``; a kept
    window is shown on ``keep_baselines``. ``input_scores`` and ``keep_scores`` are
    ``s(input)`` and ``s(keep_baselines)`` where the caller has scored them already; None
    scores them here when needed. ``extra`` names more kinds of evidence to return for the
    same windows, from the same model calls (see :data:`~captum_borex.bo.optimizer.Objective`).
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        inputs: Tensor,
        baselines: Tensor,
        keep_baselines: Tensor,
        target: TargetType,
        additional_forward_args: Any,
        space: WindowSpace,
        gain: float,
        apply_softmax: bool,
        internal_batch_size: int | None,
        queries: str = "both",
        input_scores: Tensor | None = None,
        keep_scores: Tensor | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.forward_func = forward_func
        self.inputs = inputs
        self.baselines = baselines
        self.keep_baselines = keep_baselines
        self.target = target
        self.args = additional_forward_args
        self.space = space
        self.gain = gain
        self.apply_softmax = apply_softmax
        self.internal_batch_size = internal_batch_size
        self.queries = queries
        self.extra = extra
        evidence = {queries, *extra}
        batch = inputs.shape[0]
        rows = torch.arange(batch, device=inputs.device)
        # Evidence from one kind of query compares it with the unperturbed input (delete)
        # or the keep baselines (keep), scored once here unless given.
        if "delete" in evidence and input_scores is None:
            input_scores = self._scores(inputs, rows, batch)
        if "keep" in evidence and keep_scores is None:
            keep_scores = self._scores(keep_baselines, rows, batch)
        self.input_scores = input_scores
        self.keep_scores = keep_scores

    def _scores(self, inputs: Tensor, rows: Tensor, batch: int) -> Tensor:
        return target_scores(
            self.forward_func,
            inputs,
            rows,
            self.target,
            self.args,
            batch,
            self.apply_softmax,
            self.internal_batch_size,
        )

    def __call__(self, combos: Tensor, centres: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        batch, q = combos.shape
        rows = torch.arange(batch, device=self.inputs.device).repeat_interleave(q)
        masks = self.space.masks(combos.reshape(-1), centres.reshape(batch * q, -1)).unsqueeze(1)
        x = self.inputs[rows]
        perturbed = {}
        if "delete" in NEEDS[self.queries]:
            perturbed["delete"] = torch.where(masks, self.baselines[rows], x)
        if "keep" in NEEDS[self.queries]:
            perturbed["keep"] = torch.where(masks, x, self.keep_baselines[rows])
        scores = self._scores(
            torch.cat(list(perturbed.values())), rows.repeat(len(perturbed)), batch
        )
        observed = dict(zip(perturbed, scores.chunk(len(perturbed))))

        def evidence(name: str) -> Tensor:
            if name == "both":
                delta = observed["keep"] - observed["delete"]
            elif name == "delete":
                delta = cast(Tensor, self.input_scores)[rows] - observed["delete"]
            else:
                delta = observed["keep"] - cast(Tensor, self.keep_scores)[rows]
            return torch.tanh(self.gain * delta.view(batch, q).to(torch.float64) / 2)

        y = evidence(self.queries)
        if not self.extra:
            return y
        return y, torch.stack([evidence(name) for name in self.extra], -1)


def _cuda_devices(x: Tensor) -> list[int]:
    return (
        [x.device.index if x.device.index is not None else torch.cuda.current_device()]
        if x.is_cuda
        else []
    )
