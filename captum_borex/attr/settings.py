"""BOREx's algorithm settings: one frozen, validated type and its named presets.

Every knob of the algorithm lives here, with its default written once. :class:`BOREx` takes a
preset name or a :class:`BORExSettings`; its ``attribute`` keeps only per-call arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Literal

from torch import Tensor

from captum_borex._checks import (
    check_bool,
    check_choice,
    check_finite_number,
    check_int,
    check_nonnegative,
    check_positive,
)
from captum_borex.attr._priors import REDUCTIONS, ChannelReduction

#: What a window query evaluates (see :attr:`BORExSettings.queries`).
QUERIES = ("both", "delete", "keep")
#: What ``map_from`` can name: the evidence the queries observe, or the prior's own map.
MAP_NAMES = (*QUERIES, "prior")
#: The perturbed inputs each kind of evidence needs: deleted and / or kept windows.
NEEDS = {"both": {"delete", "keep"}, "delete": {"delete"}, "keep": {"keep"}}
#: The models of what the queries observe (see :attr:`BORExSettings.surrogate`).
SURROGATES = ("field", "windows")
#: Settings only the ``"windows"`` surrogate reads; the field model refuses other values.
WINDOWS_ONLY = (
    "gain",
    "map_from",
    "prior_scale",
    "prior_mean",
    "prior_fit",
    "prior_fit_strength",
    "map_prior",
    "kappa",
    "lengthscale",
    "lengthscale_bounds",
    "noise",
    "jitter",
    "warm_start",
    "exact_map",
    "map_check",
    "map_check_shown",
    "prior_map_smoothing",
)
#: Settings only the ``"field"`` surrogate reads.
FIELD_ONLY = ("cells", "smoothing", "focus")

KeepBaselines = str | float | Callable[[Tensor], Tensor] | None
MapFrom = str | Sequence[str] | Mapping[str, float] | None


@dataclass(frozen=True)
class BORExSettings:
    r"""Every setting of the BOREx algorithm, validated when built.

    Build one from a preset and change what you need: ``BORExSettings.preset("published")``
    or ``BORExSettings(surrogate="field", cells=24)``. The presets (:data:`PRESETS`) are
    ``"default"`` (these defaults) and ``"published"`` (the paper's loop exactly).

    **The model**

    Attributes:
        surrogate: "field" models the map itself: the input is cut into cells, each cell
            holds its contribution to the target's probability, and a window's query
            observes the sum over the cells it covers; a Gaussian prior centred on the
            prior map (its scale and offset fitted, a smooth residual on top) gives an
            exact posterior, and each round queries the window whose sum is most uncertain
            (:mod:`captum_borex.bo.field`). "windows" (both presets) puts a Gaussian process on
            the windows' scores, queries by UCB and averages the posterior over every window
            covering a pixel; the settings marked *windows* below apply to it only, and
            setting them with "field" raises a ValueError. Default: "windows"
        cells: "field" only: cells along each spatial axis of an image (a clip gets half as
            many, and ``min(T, 4)`` along time). Default: 16
        smoothing: "field" only: the field's correction to the prior is box-filtered over
            this many times the smallest window's half-size (0: not at all); the prior's
            own part keeps its detail. Default: 0.5
        focus: "field" only: how much the choice of window favours cells the field puts
            high (0: the most uncertain window sum, wherever it is; larger values spend more
            queries on the top of the map, which deletion and insertion read first).
            Default: 3.0

    **What a query observes**

    Attributes:
        queries: "both" (published) scores a window's *delete* input (window set to the
            baseline) and *keep* input (everything else set to the baseline), ``delta =
            s(keep) - s(delete)``; "delete" only the first, ``delta = s(input) - s(delete)``;
            "keep" only the second, ``delta = s(keep) - s(baseline)``. One kind costs one
            model evaluation per window, so the same budget buys twice the windows.
            Default: "both"
        gain: *windows*: slope of the GP's observation ``y = tanh(gain * delta / 2)``. The
            published 10 saturates above ``|delta|`` of about 0.3; 3 keeps windows apart over
            the whole range. Default: 3.0 (published: 10.0)
        apply_softmax: Score by the target's softmax probability (published); False uses
            the raw output, for models that already return probabilities. Default: True
        keep_baselines: What surrounds a kept window in a *keep* query: None for
            ``attribute``'s ``baselines`` (published), or a substrate as
            :func:`~captum_borex.metrics.insertion_auc` takes it -- "blur", "mean",
            "zeros", a number or a callable ``inputs -> tensor`` (in the model's input
            space). Default: "blur" (published: None)
        map_from: *windows*: which maps the map is built from: None for the default's
            (below), or one or several of "both", "delete" and "keep" that the queries
            observe and "prior", the prior's own map (box-averaged by
            ``prior_map_smoothing``, in the evidence's units; it needs a prior and at least
            one evidence beside it), fused by weighted mean rank
            (:func:`~captum_borex.attr.rank_fusion`) or chosen among by ``map_check``; a
            mapping gives the weights. Stored as a tuple of ``(name, weight)`` pairs.
            Default: None (with a map check and ``queries="both"``: both, delete, keep and
            prior -- the prior left out where BOREx has none; else ``queries``' own evidence,
            as published)
        map_check: *windows*: choose each input's map by checking it instead of fusing:
            each candidate map's top fraction ``f`` of the pixels is deleted (set to the
            baselines) at these fractions and shown alone (on ``keep_baselines``) at
            ``map_check_shown``'s, and the candidate whose mean ``s(shown)`` minus mean
            ``s(deleted)`` is highest becomes the map (these are the inputs a deletion curve
            on the baselines and an insertion curve on ``keep_baselines`` score at those
            fractions). The candidates are ``map_from``'s maps (unweighted), by default the
            both, the delete and the keep evidence and the prior's own map: which ranks
            pixels best differs between data sets and inputs (in the benchmark, delete
            evidence on digits, keep evidence on synthetic shapes; on photos at 224 px
            Grad-CAM alone deletes better than any refined map), and no setting knows in
            advance which an input needs; with the prior among them, an input keeps the
            prior's map where its top separates the target best. Costs ``candidates *
            (len(map_check) + len(map_check_shown))`` model calls per input after the last
            round (16 by default with a prior, 12 without); None (published) fuses instead.
            Default: (0.1, 0.5)
        map_check_shown: *windows*: the fractions at which the map check shows each
            candidate's top alone; None: ``map_check``'s. A deletion curve falls early, so
            its start tells candidates apart, while an insertion curve on a blurred canvas
            rises late: ``(0.5, 0.75)`` trades a little insertion for lower deletion (in the
            benchmark's run 12, photo deletion up to 0.006 lower, insertion 0.001 to 0.009
            lower, the same calls and as many rows won). Default: None
        prior_map_smoothing: *windows*: where the prior's own map is one of ``map_from``'s
            maps (a map-check candidate, by default), it is box-averaged over this many
            times the smallest window's half-size along each axis first (0: as given): the
            windows cannot confirm detail finer than themselves, and deletion and insertion
            reward a top that forms connected regions. Only this candidate changes; the GP's
            prior mean and map keep the prior's own detail. Default: 0.5

    **The prior**

    Attributes:
        prior_scale: *windows*: the prior is scaled to mean absolute value ``prior_scale``.
            Default: 0.1
        prior_reduction: How a channel map becomes one value per pixel: "sum", "mean",
            "abs_sum", "max_abs", "l2" or a callable ``(N, C, H, W) -> (N, H, W)``.
            Default: "sum"
        prior_mean: *windows*: GP prior mean of a window: the prior at its centre ("center",
            published) or averaged over it ("window"). Default: "center"
        prior_fit: *windows*: the prior mean as given ("fixed", published) or
            ``a[size] + b * prior`` with an offset per window size and a slope ``b >= 0``
            refitted to each image's observations after every round ("affine"), so a prior
            of the wrong scale neither swamps the observations nor is swamped by them.
            Default: "affine"
        prior_fit_strength: *windows*: with "affine", how many observations' weight pulls
            the offsets towards 0 and the slope towards 1. Default: 1.0
        map_prior: *windows*: the prior's part of the map: box-averaged over windows like the GP's
            correction ("smoothed", published) or the fitted prior itself ("sharp"), so a
            detailed prior keeps its detail where the observations do not change it.
            Default: "sharp"

    **Surrogate and acquisition**

    Attributes:
        kappa: *windows*: UCB exploration weight. Default: 5.0 (published: 10.0)
        lengthscale: *windows*: initial length scales, one per GP feature -- images: (rows, columns,
            size); clips: (frames, rows, columns, duration, size) -- in pixels of a
            224-pixel image. None: 12 for positions, 10 for sizes. Default: None
        lengthscale_bounds: *windows*: bounds of every length scale. Default: (1.0, 20.0)
        noise: *windows*: observation noise variance (the field picks its own). Default: 0.01
        jitter: *windows*: half-widths of the uniform jitter added to the GP's copy of each window,
            one per feature. None: 1 for positions, 0.5 for sizes. Default: None
        windows_per_step: Windows queried per round, chosen jointly (the GP's mean is held
            fixed between the picks of one round; the field's choice does not depend on the
            values observed, so its joint choice is exact). Default: 1
        temporal_window_sizes: Clips only: window half-lengths in frames. None: ``T *
            (1/8, 1/4)`` rounded. Default: None

    **Speed** (the published loop: stride 1, ``refit_every=1``, ``warm_start=False``,
    ``exact_map=True``)

    Attributes:
        acquisition_stride: Candidate windows have centres this many pixels (and frames)
            apart -- one int or one per axis; "windows" then refines UCB's best one at full
            resolution. None: "field", one centre per cell; "windows", about 56 centres per
            side (4 at 224 pixels) and 16 in time, coarsened until the lattice holds at most
            25,000 windows. Default: None
        refit_every: Refit the length scales (the field: pick its length scale, amplitude
            and noise by marginal likelihood) after every this many rounds (and after the
            last). Default: 5
        warm_start: *windows*: start each refit from the previous length scales. Default: True
        exact_map: *windows*: rebuild the map from the posterior at every window instead of
            interpolating it from the acquisition lattice. Default: False

    Raises:
        ValueError / TypeError: a setting out of range or of the wrong type, naming it.

    Examples::

        >>> settings = BORExSettings.preset("published").replace(refit_every=5)
        >>> borex = BOREx(model, prior, settings=settings)
    """

    surrogate: Literal["field", "windows"] = "windows"
    cells: int = 16
    smoothing: float = 0.5
    focus: float = 3.0
    queries: Literal["both", "delete", "keep"] = "both"
    gain: float = 3.0
    apply_softmax: bool = True
    keep_baselines: KeepBaselines = "blur"
    map_from: MapFrom = None
    map_check: tuple[float, ...] | None = (0.1, 0.5)
    map_check_shown: tuple[float, ...] | None = None
    prior_map_smoothing: float = 0.5
    prior_scale: float = 0.1
    prior_reduction: ChannelReduction = "sum"
    prior_mean: Literal["center", "window"] = "center"
    prior_fit: Literal["fixed", "affine"] = "affine"
    prior_fit_strength: float = 1.0
    map_prior: Literal["smoothed", "sharp"] = "sharp"
    kappa: float = 5.0
    lengthscale: tuple[float, ...] | None = None
    lengthscale_bounds: tuple[float, float] = (1.0, 20.0)
    noise: float = 0.01
    jitter: tuple[float, ...] | None = None
    windows_per_step: int = 1
    temporal_window_sizes: tuple[int, ...] | None = None
    acquisition_stride: int | tuple[int, ...] | None = None
    refit_every: int = 5
    warm_start: bool = True
    exact_map: bool = False

    def __post_init__(self) -> None:
        checks = (
            _check_model_settings,
            _check_query_settings,
            _check_prior_settings,
            _check_search_settings,
        )
        for check in checks:
            for name, value in check(self).items():
                object.__setattr__(self, name, value)
        _check_surrogate_reads(self)

    @classmethod
    def preset(cls, name: str) -> BORExSettings:
        """The named preset (see :data:`PRESETS`).

        Raises:
            ValueError: an unknown name; the message lists the presets.
        """
        if name not in PRESETS:
            raise ValueError(
                f"unknown BOREx preset {name!r}; the presets are {', '.join(map(repr, PRESETS))}"
            )
        return PRESETS[name]

    def replace(self, **changes: Any) -> BORExSettings:
        """A copy with ``changes`` applied and validated.

        Raises:
            TypeError: a name that is not a setting; the message lists the settings.
        """
        names = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(
                f"unknown BOREx setting(s) {', '.join(map(repr, unknown))}; the settings are "
                f"{', '.join(names)}"
            )
        return dataclasses.replace(self, **changes)

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the defaults, by name (for logs and fingerprints)."""
        default = BORExSettings()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    @property
    def map_sources(self) -> dict[str, float]:
        """The maps the map is built from (or chosen among, see :attr:`map_check`), by
        name, with their weights: ``map_from``'s; by default (``queries="both"`` with a map
        check) the both, the delete and the keep evidence and the prior's own map, which a
        BOREx without a prior leaves out (:meth:`sources`); else the queries' own evidence."""
        if self.map_from is not None:
            return dict(self.map_from)
        if self.surrogate == "windows" and self.map_check is not None and self.queries == "both":
            return {"both": 1.0, "delete": 1.0, "keep": 1.0, "prior": 1.0}
        return {self.queries: 1.0}

    def sources(self, prior: bool = True) -> dict[str, float]:
        """:attr:`map_sources` of a BOREx with (``prior=True``) or without a prior: without
        one there is no "prior" map, and what remains is the evidence the queries observe.
        Default: with a prior.

        Raises:
            TypeError: ``prior`` not True or False.
        """
        check_bool(prior, "prior", "whether BOREx has a prior")
        return {name: w for name, w in self.map_sources.items() if prior or name != "prior"}

    def check_candidates(self, prior: bool = True) -> tuple[str, ...]:
        """The maps :attr:`map_check` chooses among per input, for a BOREx with (``prior=
        True``, the default) or without a prior; empty when nothing is checked (one map,
        the field, or ``map_check=None``)."""
        sources = tuple(self.sources(prior))
        if self.surrogate != "windows" or self.map_check is None or len(sources) < 2:
            return ()
        return sources

    @property
    def check_fractions(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The fractions of the pixels at which the map check deletes each candidate's top
        (:attr:`map_check`) and shows it alone (:attr:`map_check_shown`, or
        :attr:`map_check`'s where that is None); both empty without a check."""
        if self.map_check is None:
            return (), ()
        return self.map_check, self.map_check_shown or self.map_check

    def calls_per_input(self, n_iter: int, prior: bool = True) -> int:
        """Model evaluations BOREx makes per input for ``n_iter`` rounds, the prior's own
        not included: the target check, the keep baselines' score (unless
        ``queries="delete"``), each round's windows (two evaluations a window with
        ``queries="both"``) and the map check (:meth:`check_candidates`).

        Args:
            n_iter: BO rounds, as given to ``attribute``.
            prior: Whether the BOREx has a prior (the default map check also checks the
                prior's own map). Default: True

        Returns:
            Model evaluations per input (a clip's pass counts as one).

        Raises:
            TypeError / ValueError: ``n_iter`` not an int >= 1, or ``prior`` not True or
                False.

        Examples::

            >>> BORExSettings().calls_per_input(n_iter=40)
            98
            >>> BORExSettings().calls_per_input(n_iter=40, prior=False)
            94
        """
        check_int(n_iter, "n_iter")
        before = 1 if self.queries == "delete" else 2
        per_window = 2 if self.queries == "both" else 1
        deleted_at, shown_at = self.check_fractions
        checks = len(self.check_candidates(prior)) * (len(deleted_at) + len(shown_at))
        return before + n_iter * self.windows_per_step * per_window + checks


def _check_model_settings(s: BORExSettings) -> dict[str, Any]:
    check_choice(s.surrogate, "surrogate", SURROGATES)
    check_int(s.cells, "cells", minimum=2)
    return {
        "smoothing": check_nonnegative(s.smoothing, "smoothing"),
        "focus": check_nonnegative(s.focus, "focus"),
    }


def _check_surrogate_reads(s: BORExSettings) -> None:
    """Refuse a setting the chosen surrogate would ignore.

    Raises:
        ValueError: naming the setting and the surrogate that reads it.
    """
    ignored, reader = (WINDOWS_ONLY, "windows") if s.surrogate == "field" else (FIELD_ONLY, "field")
    defaults = {f.name: f.default for f in fields(s)}
    for name in ignored:
        if getattr(s, name) != defaults[name]:
            raise ValueError(
                f"{name} applies to surrogate={reader!r} only, and these settings have "
                f"surrogate={s.surrogate!r}; pass surrogate={reader!r} too, or leave {name} "
                "at its default"
            )


def _check_query_settings(s: BORExSettings) -> dict[str, Any]:
    check_choice(s.queries, "queries", QUERIES)
    check_bool(s.apply_softmax, "apply_softmax")
    keep = s.keep_baselines
    if isinstance(keep, bool) or not (
        keep is None or isinstance(keep, (str, int, float)) or callable(keep)
    ):
        raise TypeError(
            "keep_baselines must be None, 'blur', 'mean', 'zeros', a number or a callable "
            f"inputs -> tensor, got {type(keep).__name__}; for a tensor pass a callable "
            "returning it"
        )
    if isinstance(keep, str):
        check_choice(keep, "keep_baselines", ("blur", "mean", "zeros"))
    if isinstance(keep, (int, float)):
        check_finite_number(keep, "keep_baselines")
    map_from = _map_from_pairs(s.map_from, s.queries)
    map_check = _fractions(s.map_check, "map_check")
    if map_check is not None and map_from is not None and len({w for _, w in map_from}) > 1:
        raise ValueError(
            f"map_from={s.map_from!r} weighs the maps, but map_check chooses one per input and "
            "reads no weights; pass map_check=None to fuse them by weighted mean rank, or "
            "name the candidates without weights"
        )
    return {
        "gain": check_positive(s.gain, "gain"),
        "map_from": map_from,
        "map_check": map_check,
        "map_check_shown": _fractions(s.map_check_shown, "map_check_shown"),
    }


def _fractions(values: Any, name: str) -> tuple[float, ...] | None:
    """Increasing distinct fractions strictly between 0 and 1, as a tuple, or None.

    Raises:
        TypeError: not None or a non-empty sequence of numbers.
        ValueError: a fraction outside (0, 1).
    """
    numbers = _numbers(values, name, check_finite_number)
    if numbers is None:
        return None
    if not all(0 < f < 1 for f in numbers):
        raise ValueError(
            f"{name} must hold fractions of the pixels strictly between 0 and 1, got {values!r}"
        )
    return tuple(sorted(set(numbers)))


def _check_prior_settings(s: BORExSettings) -> dict[str, Any]:
    if not (callable(s.prior_reduction) or s.prior_reduction in REDUCTIONS):
        raise ValueError(
            f"prior_reduction must be one of {REDUCTIONS} or a callable, got {s.prior_reduction!r}"
        )
    check_choice(s.prior_mean, "prior_mean", ("center", "window"))
    check_choice(s.prior_fit, "prior_fit", ("fixed", "affine"))
    check_choice(s.map_prior, "map_prior", ("smoothed", "sharp"))
    return {
        "prior_scale": check_positive(s.prior_scale, "prior_scale"),
        "prior_fit_strength": check_positive(s.prior_fit_strength, "prior_fit_strength"),
        "prior_map_smoothing": check_nonnegative(s.prior_map_smoothing, "prior_map_smoothing"),
    }


def _check_search_settings(s: BORExSettings) -> dict[str, Any]:
    check_int(s.windows_per_step, "windows_per_step")
    check_int(s.refit_every, "refit_every")
    check_bool(s.warm_start, "warm_start")
    check_bool(s.exact_map, "exact_map")
    bounds = _numbers(s.lengthscale_bounds, "lengthscale_bounds", check_positive)
    if bounds is None or len(bounds) != 2 or bounds[0] > bounds[1]:
        raise ValueError(
            f"lengthscale_bounds must be (lower, upper) with 0 < lower <= upper, "
            f"got {s.lengthscale_bounds!r}"
        )
    stride = s.acquisition_stride
    if stride is not None and not isinstance(stride, int):
        stride = _numbers(stride, "acquisition_stride", check_int)
    elif stride is not None:
        check_int(stride, "acquisition_stride")
    return {
        "kappa": check_nonnegative(s.kappa, "kappa"),
        "noise": check_positive(s.noise, "noise"),
        "lengthscale": _numbers(s.lengthscale, "lengthscale", check_positive),
        "lengthscale_bounds": bounds,
        "jitter": _numbers(s.jitter, "jitter", check_nonnegative),
        "temporal_window_sizes": _numbers(
            s.temporal_window_sizes, "temporal_window_sizes", check_int
        ),
        "acquisition_stride": stride,
    }


def _numbers(values: Any, name: str, check: Callable[[Any, str], Any]) -> tuple | None:
    """A tuple of checked numbers from a sequence, or None."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of numbers or None, got {values!r}")
    return tuple(check(v, name) for v in values)


def _map_from_pairs(map_from: Any, queries: str) -> tuple[tuple[str, float], ...] | None:
    """``map_from`` as ``(name, weight)`` pairs, checked against ``queries``.

    Raises:
        TypeError: not None, a string, a sequence of strings or a mapping to numbers.
        ValueError: an unknown or repeated name, a weight that is not positive, or evidence
            the queries do not observe.
    """
    if map_from is None:
        return None
    pairs: list[tuple[Any, Any]] | None = None
    if isinstance(map_from, Mapping):
        pairs = list(map_from.items())
    elif isinstance(map_from, str):
        pairs = [(map_from, 1.0)]
    elif isinstance(map_from, Sequence):
        pairs = [item if isinstance(item, tuple) else (item, 1.0) for item in map_from]
    if pairs is None or not all(isinstance(p, tuple) and isinstance(p[0], str) for p in pairs):
        raise TypeError(
            "map_from must be None, a string, a sequence of strings or a mapping from "
            f"strings to weights, got {map_from!r}"
        )
    checked = tuple((n, check_positive(w, f"map_from[{n!r}]")) for n, w in pairs)
    if not checked or len({n for n, _ in checked}) != len(checked):
        raise ValueError(f"map_from must name each evidence once, got {map_from!r}")
    if all(name == "prior" for name, _ in checked):
        raise ValueError(
            f"map_from={map_from!r} names only the prior: name the evidence to refine it "
            'with too, e.g. map_from=("both", "prior")'
        )
    for name, _ in checked:
        check_choice(name, "map_from", MAP_NAMES)
        if name != "prior" and not NEEDS[name] <= NEEDS[queries]:
            raise ValueError(
                f"map_from={name!r} needs {' and '.join(sorted(NEEDS[name]))} queries, but "
                f"queries={queries!r} makes only {' and '.join(sorted(NEEDS[queries]))} queries"
            )
    return checked


#: The named presets. ``"default"``: this package's defaults. ``"published"``: the loop of
#: Kikuchi et al. (ACCV 2022) exactly -- fixed prior mean at the window centre, the smoothed
#: map, gain 10, kappa 10, both queries on one baseline, the full acquisition grid (stride 1),
#: the length scales refitted from scratch at every step and the map rebuilt from every window.
PRESETS: Mapping[str, BORExSettings] = MappingProxyType(
    {
        "default": BORExSettings(),
        "published": BORExSettings(
            surrogate="windows",
            queries="both",
            gain=10.0,
            apply_softmax=True,
            keep_baselines=None,
            map_from=None,
            map_check=None,
            prior_mean="center",
            prior_fit="fixed",
            map_prior="smoothed",
            kappa=10.0,
            lengthscale=None,
            lengthscale_bounds=(1.0, 20.0),
            noise=0.01,
            jitter=None,
            windows_per_step=1,
            acquisition_stride=1,
            refit_every=1,
            warm_start=False,
            exact_map=True,
        ),
    }
)


def resolve_settings(settings: Any) -> BORExSettings:
    """A :class:`BORExSettings` from a preset name or a settings object.

    Raises:
        TypeError: neither a string nor a :class:`BORExSettings`.
        ValueError: an unknown preset name (the message lists the presets).
    """
    if isinstance(settings, BORExSettings):
        return settings
    if isinstance(settings, str):
        return BORExSettings.preset(settings)
    raise TypeError(
        "settings must be a preset name "
        f"({', '.join(map(repr, PRESETS))}) or a BORExSettings, got {type(settings).__name__}"
    )
