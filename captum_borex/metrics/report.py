"""Prior vs refined maps, image by image: does BOREx improve the map it was given?

Every measure is computed for the prior's map and for the refined map of each image; the
pairs are compared with a Wilcoxon signed-rank test (two-sided) and an effect size, the
matched-pairs rank-biserial correlation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex._checks import format_inputs
from captum_borex._forward import check_target
from captum_borex._state import cuda_devices, forked_rng, modules_of, preserved
from captum_borex._substrates import Substrate
from captum_borex.attr._priors import PriorType, compute_prior, to_pixel_maps
from captum_borex.metrics.faithfulness import CausalCurves, causal_curves
from captum_borex.metrics.localisation import energy_pointing_game, pointing_game
from captum_borex.metrics.segmentation import _matching_masks, segmentation_curves

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from captum_borex.attr.settings import BORExSettings

#: Every measure of a report and whether a higher value is better.
HIGHER_IS_BETTER = {
    "deletion": False,
    "insertion": True,
    "pointing_game": True,
    "energy_pointing_game": True,
    "mean_precision": True,
    "mean_recall": True,
}
#: Differences smaller than this (relative to the values) count as ties (float rounding).
TIE_TOLERANCE = 1e-6


@dataclass(repr=False)
class PairedComparison:
    """One measure, prior vs refined, image by image, with a paired test.

    Attributes:
        prior: ``(N,)`` the measure on each prior map.
        refined: ``(N,)`` the measure on each refined map.
        higher_is_better: Whether a higher value of the measure is better.
        statistic: Wilcoxon's statistic (the smaller signed-rank sum); 0 when every pair ties.
        p_value: Two-sided p-value of the Wilcoxon signed-rank test on ``refined - prior``
            (pairs that tie are dropped, as in Wilcoxon's original test); 1.0 when every
            pair ties.
        rank_biserial: Matched-pairs rank-biserial correlation in [-1, 1]:
            ``(R+ - R-) / (R+ + R-)`` with ``R+`` / ``R-`` the rank sums of the positive /
            negative differences; > 0 when the refined values are higher; 0 when every
            pair ties.
        mean_difference: Mean of ``refined - prior``.
        n_nonzero: Number of pairs that do not tie.
    """

    prior: Tensor
    refined: Tensor
    higher_is_better: bool
    statistic: float
    p_value: float
    rank_biserial: float
    mean_difference: float
    n_nonzero: int

    def winner(self, alpha: float = 0.05) -> str:
        """ "refined" or "prior" if it is significantly better at level ``alpha``, else "none"."""
        if not self.p_value < alpha or self.rank_biserial == 0:
            return "none"
        refined_higher = self.rank_biserial > 0
        return "refined" if refined_higher == self.higher_is_better else "prior"

    def __repr__(self) -> str:
        return (
            f"PairedComparison(prior={self.prior.mean().item():.4g}, "
            f"refined={self.refined.mean().item():.4g}, p_value={self.p_value:.3g}, "
            f"rank_biserial={self.rank_biserial:.3g})"
        )


def paired_comparison(prior: Tensor, refined: Tensor, higher_is_better: bool) -> PairedComparison:
    """Compare per-image values of one measure with a Wilcoxon signed-rank test.

    Args:
        prior: ``(N,)`` values for the prior maps.
        refined: ``(N,)`` values for the refined maps, paired with ``prior``.
        higher_is_better: Whether a higher value is better (only recorded).

    Returns:
        :class:`PairedComparison`. Differences within float rounding (relative 1e-6) are
        ties; when every pair ties the p-value is 1.0 and the effect size 0.

    Examples::

        >>> paired_comparison(auc_prior, auc_refined, higher_is_better=True).p_value
    """
    if not isinstance(prior, Tensor) or not isinstance(refined, Tensor):
        raise TypeError("prior and refined must be tensors")
    if prior.dim() != 1 or prior.shape != refined.shape or prior.numel() == 0:
        raise ValueError(
            f"prior {tuple(prior.shape)} and refined {tuple(refined.shape)} must be non-empty "
            "1-D tensors of the same length"
        )
    from scipy import stats

    a = prior.detach().double().cpu().numpy()
    b = refined.detach().double().cpu().numpy()
    difference = b - a
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)
    difference[np.abs(difference) <= TIE_TOLERANCE * scale] = 0.0
    nonzero = difference[difference != 0]
    if nonzero.size == 0:
        statistic, p_value, effect = 0.0, 1.0, 0.0
    else:
        result = stats.wilcoxon(nonzero)
        statistic, p_value = float(result.statistic), float(result.pvalue)
        ranks = stats.rankdata(np.abs(nonzero))
        effect = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return PairedComparison(
        prior=prior.detach().double().cpu(),
        refined=refined.detach().double().cpu(),
        higher_is_better=bool(higher_is_better),
        statistic=statistic,
        p_value=min(1.0, p_value),
        rank_biserial=effect,
        mean_difference=float(difference.mean()) if nonzero.size else 0.0,
        n_nonzero=int(nonzero.size),
    )


@dataclass(repr=False)
class RefinementReport:
    """Prior vs refined maps: per-image measures, paired tests, a table and a figure.

    Build it with :func:`refinement_report` (runs the prior and BOREx) or
    :meth:`RefinementReport.from_maps` (maps you already have).

    Attributes:
        comparisons: Measure name -> :class:`PairedComparison`. Always "deletion" (lower
            is better) and "insertion" (higher is better); with masks also
            "pointing_game", "energy_pointing_game", "mean_precision" and "mean_recall"
            (higher is better).
        prior_maps: ``(N, *spatial)`` the prior's maps.
        refined_maps: ``(N, *spatial)`` the refined maps.
        curves: "deletion" / "insertion" -> {"prior": :class:`CausalCurves`,
            "refined": :class:`CausalCurves`}.
        alpha: Significance level used for the "winner" column. Default: 0.05
    """

    comparisons: dict[str, PairedComparison]
    prior_maps: Tensor
    refined_maps: Tensor
    curves: dict[str, dict[str, CausalCurves]] = field(default_factory=dict)
    alpha: float = 0.05

    @property
    def n_images(self) -> int:
        """Number of images compared."""
        return int(self.prior_maps.shape[0])

    @classmethod
    def from_maps(
        cls,
        model: Callable[..., Tensor],
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType,
        prior_maps: Tensor,
        refined_maps: Tensor,
        masks: Tensor | None = None,
        *,
        additional_forward_args: Any = None,
        n_steps: int = 100,
        deletion_substrate: Substrate = "zeros",
        insertion_substrate: Substrate = "blur",
        apply_softmax: bool = True,
        tolerance: float = 15.0,
        fractions: Sequence[float] | Tensor | None = None,
        alpha: float = 0.05,
        internal_batch_size: int = 256,
    ) -> RefinementReport:
        r"""A report from maps you already have.

        Args:
            model: The model scored by deletion / insertion.
            inputs: ``(N, C, H, W)`` or ``(N, C, T, H, W)`` batch (or a 1-tuple).
            target: Output index explained, as in Captum.
            prior_maps: The prior's maps: input-shaped, ``(N, 1, *spatial)`` or
                ``(N, *spatial)`` (channels summed).
            refined_maps: The refined maps, in any of the same layouts.
            masks: ``(N, *spatial)`` or ``(N, 1, *spatial)`` ground-truth masks; adds the
                localisation measures. Default: None
            additional_forward_args: Extra arguments for ``model``. Default: None
            n_steps: Steps of the deletion / insertion curves. Default: 100
            deletion_substrate: What deleted pixels become (see
                :func:`~captum_borex.metrics.deletion_auc`). Default: "zeros"
            insertion_substrate: What insertion starts from. Default: "blur"
            apply_softmax: Score by the target's softmax probability. Default: True
            tolerance: Pointing-game tolerance in pixels. Default: 15.0
            fractions: Image shares of the precision / recall curves (see
                :func:`~captum_borex.metrics.segmentation_curves`). Default: None
                (0.05, 0.10, ..., 1.0)
            alpha: Significance level of the "winner" column. Default: 0.05
            internal_batch_size: Largest batch passed to the model. Default: 256

        Returns:
            :class:`RefinementReport`.

        Raises:
            ValueError: maps or masks that do not fit the inputs, or ``alpha`` outside (0, 1).

        Examples::

            >>> report = RefinementReport.from_maps(model, images, labels, gradcam, refined,
            ...                                     masks=masks)
            >>> print(report)
        """
        x, _ = format_inputs(inputs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
        maps = {
            "prior": to_pixel_maps(prior_maps, x, "sum", "prior_maps"),
            "refined": to_pixel_maps(refined_maps, x, "sum", "refined_maps"),
        }
        substrates = {"deletion": deletion_substrate, "insertion": insertion_substrate}
        curves = {
            mode: {
                which: causal_curves(
                    mode,
                    model,
                    x,
                    maps[which],
                    target,
                    additional_forward_args,
                    n_steps,
                    substrate,
                    apply_softmax,
                    internal_batch_size,
                )
                for which in ("prior", "refined")
            }
            for mode, substrate in substrates.items()
        }
        values = {mode: (c["prior"].auc, c["refined"].auc) for mode, c in curves.items()}
        if masks is not None:
            prior_values = _localisation(maps["prior"], masks, tolerance, fractions)
            refined_values = _localisation(maps["refined"], masks, tolerance, fractions)
            values.update(
                {name: (prior_values[name], refined_values[name]) for name in prior_values}
            )
        comparisons = {
            name: paired_comparison(prior, refined, HIGHER_IS_BETTER[name])
            for name, (prior, refined) in values.items()
        }
        return cls(
            comparisons=comparisons,
            prior_maps=maps["prior"],
            refined_maps=maps["refined"],
            curves=curves,
            alpha=float(alpha),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Each measure's summary as plain Python numbers.

        Returns:
            ``{measure: {"prior": mean, "refined": mean, "mean_difference": float,
            "rank_biserial": float, "statistic": float, "p_value": float,
            "n_images": int, "n_nonzero": int, "better": "higher" | "lower",
            "winner": "refined" | "prior" | "none"}}``.

        Examples::

            >>> report.to_dict()["insertion"]["p_value"]
        """
        return {name: self._row(c) for name, c in self.comparisons.items()}

    def _row(self, comparison: PairedComparison) -> dict[str, Any]:
        return {
            "prior": float(comparison.prior.mean()),
            "refined": float(comparison.refined.mean()),
            "mean_difference": comparison.mean_difference,
            "rank_biserial": comparison.rank_biserial,
            "statistic": comparison.statistic,
            "p_value": comparison.p_value,
            "n_images": self.n_images,
            "n_nonzero": comparison.n_nonzero,
            "better": "higher" if comparison.higher_is_better else "lower",
            "winner": comparison.winner(self.alpha),
        }

    def to_dataframe(self) -> pandas.DataFrame:
        """:meth:`to_dict` as a pandas DataFrame, one row per measure.

        Raises:
            ImportError: pandas is not installed.

        Examples::

            >>> report.to_dataframe()[["prior", "refined", "p_value"]]
        """
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "RefinementReport.to_dataframe needs pandas; install it with "
                "`pip install pandas` (or use report.to_dict())"
            ) from err
        frame = pd.DataFrame.from_dict(self.to_dict(), orient="index")
        frame.index.name = "measure"
        return frame

    def figure(self) -> Figure:
        """A matplotlib figure (Agg canvas; pyplot is not touched).

        One scatter panel per measure (prior on x, refined on y, one point per image, the
        diagonal marking "no change"), and a panel of the mean deletion and insertion curves
        of the prior and refined maps.

        Returns:
            ``matplotlib.figure.Figure``; save it with ``fig.savefig(path)``.

        Examples::

            >>> report.figure().savefig("refinement.png", dpi=150)
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = list(self.comparisons)
        n_panels = len(names) + (1 if self.curves else 0)
        n_cols = min(3, n_panels)
        n_rows = math.ceil(n_panels / n_cols)
        fig = Figure(figsize=(4.2 * n_cols, 3.8 * n_rows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(n_rows, n_cols, squeeze=False).flatten()
        for ax, name in zip(axes, names):
            _scatter(ax, name, self.comparisons[name])
        if self.curves:
            _mean_curves(axes[len(names)], self.curves)
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        fig.suptitle(f"Prior vs refined maps, {self.n_images} images")
        return fig

    def __str__(self) -> str:
        header = (
            f"{'measure':<22}{'better':>7}{'prior':>10}{'refined':>10}{'diff':>10}"
            f"{'r_rb':>8}{'p':>11}  winner"
        )
        lines = [
            f"Refinement report: {self.n_images} images, paired Wilcoxon signed-rank test "
            f"(two-sided), alpha = {self.alpha:g}",
            header,
            "-" * len(header),
        ]
        for name, row in self.to_dict().items():
            lines.append(
                f"{name:<22}{row['better']:>7}{row['prior']:>10.4f}{row['refined']:>10.4f}"
                f"{row['mean_difference']:>+10.4f}{row['rank_biserial']:>+8.3f}"
                f"{row['p_value']:>11.3g}  {row['winner']}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RefinementReport(n_images={self.n_images}, measures={list(self.comparisons)})"


def _localisation(
    maps: Tensor,
    masks: Tensor,
    tolerance: float,
    fractions: Sequence[float] | Tensor | None,
) -> dict[str, Tensor]:
    """Per-image localisation measures of ``(N, *spatial)`` maps."""
    masks = _matching_masks(maps, masks)
    segmentation = segmentation_curves(maps, masks, fractions)
    return {
        "pointing_game": pointing_game(maps, masks, tolerance).double(),
        "energy_pointing_game": energy_pointing_game(maps, masks).double(),
        "mean_precision": segmentation.mean_precision.double(),
        "mean_recall": segmentation.mean_recall.double(),
    }


def _scatter(ax: Axes, name: str, comparison: PairedComparison) -> None:
    prior, refined = comparison.prior.numpy(), comparison.refined.numpy()
    low = float(min(prior.min(), refined.min()))
    high = float(max(prior.max(), refined.max()))
    pad = 0.05 * (high - low) or 0.05
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", lw=1, ls="--")
    ax.scatter(prior, refined, s=18, alpha=0.8)
    better = "higher" if comparison.higher_is_better else "lower"
    ax.set_title(f"{name} ({better} is better)\np = {comparison.p_value:.3g}", fontsize=10)
    ax.set_xlabel("prior")
    ax.set_ylabel("refined")


def _mean_curves(ax: Axes, curves: Mapping[str, Mapping[str, CausalCurves]]) -> None:
    for colour, (mode, pair) in zip(("C3", "C2"), curves.items()):
        for which, style in (("prior", "--"), ("refined", "-")):
            curve = pair[which]
            ax.plot(
                curve.fractions.numpy(),
                curve.scores.double().mean(0).numpy(),
                color=colour,
                ls=style,
                label=f"{mode}, {which} (AUC {curve.auc.double().mean().item():.3f})",
            )
    ax.set_xlabel("fraction of pixels removed / restored")
    ax.set_ylabel("mean target score")
    ax.set_title("mean deletion / insertion curves", fontsize=10)
    ax.legend(fontsize=7)


def refinement_report(
    model: Callable[..., Tensor],
    prior: PriorType,
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType,
    masks: Tensor | None = None,
    prior_kwargs: dict[str, Any] | None = None,
    *,
    additional_forward_args: Any = None,
    settings: str | BORExSettings = "default",
    n_iter: int = 50,
    window_sizes: Sequence[int] | None = None,
    baselines: float | Tensor = 0.0,
    seed: int | None = None,
    internal_batch_size: int | None = None,
    measure_kwargs: dict[str, Any] | None = None,
) -> RefinementReport:
    r"""Run a prior and BOREx on the same images and compare their maps image by image.

    The prior's maps are computed once (as BOREx computes its prior: any Captum
    attribution, a tensor, a callable or None) and BOREx refines exactly those maps, so the
    report compares a map with its own refinement. Measures: deletion and insertion AUC and,
    with ``masks``, pointing game, energy pointing game and mean precision / recall of the
    top-k pixels; each with a paired Wilcoxon signed-rank test and the rank-biserial
    effect size (see :class:`RefinementReport`).

    Args:
        model: The classifier.
        prior: The map to refine, as BOREx's ``prior`` argument.
        inputs: ``(N, C, H, W)`` images (or a 1-tuple).
        target: Output index explained, as in Captum.
        masks: ``(N, H, W)`` or ``(N, 1, H, W)`` ground-truth masks. Default: None
        prior_kwargs: Keyword arguments for the prior. Default: None
        additional_forward_args: Extra arguments for the model (given to the prior, BOREx
            and the measures). Default: None
        settings: BOREx's settings: a preset name or a
            :class:`~captum_borex.BORExSettings` (its ``prior_reduction`` also reduces the
            prior's channel maps here). Default: "default"
        n_iter: BOREx rounds. Default: 50
        window_sizes: BOREx's window half-sizes in pixels; None scales the published ones.
            Default: None
        baselines: What BOREx's occluded pixels become, in the model's input space.
            Default: 0.0
        seed: Seed of BOREx and of a random prior (RISE, Lime). Default: None
        internal_batch_size: Largest batch BOREx gives the model at once. Default: None
        measure_kwargs: Keyword arguments for :meth:`RefinementReport.from_maps`
            (``n_steps``, substrates, ``tolerance``, ``fractions``, ``alpha``, ...).
            Default: None

    Returns:
        :class:`RefinementReport`.

    Examples::

        >>> from captum.attr import LayerGradCam
        >>> report = refinement_report(model, LayerGradCam(model, model.layer4), images,
        ...                            labels, masks=masks, n_iter=50, seed=0)
        >>> print(report)
        >>> report.figure().savefig("report.png")
    """
    from captum_borex.attr.borex import BOREx

    x, _ = format_inputs(inputs)
    borex = BOREx(model, prior=None, settings=settings)
    if measure_kwargs is not None and not isinstance(measure_kwargs, Mapping):
        raise TypeError(
            f"measure_kwargs must be a dict or None, got {type(measure_kwargs).__name__}"
        )
    if prior_kwargs is not None and not isinstance(prior_kwargs, Mapping):
        raise TypeError(f"prior_kwargs must be a dict or None, got {type(prior_kwargs).__name__}")
    reduction = borex.settings.prior_reduction
    with torch.inference_mode(False), preserved(modules_of(model, prior), [x]):
        if x.is_inference():
            x = x.clone()
        check_target(model, x, target, additional_forward_args, False)
        with forked_rng(cuda_devices(x), seed, enabled=seed is not None):
            prior_maps = compute_prior(
                prior, x, target, additional_forward_args, prior_kwargs, reduction
            )
    borex.prior = prior_maps
    refined = borex.attribute(
        x,
        target=target,
        additional_forward_args=additional_forward_args,
        baselines=baselines,
        n_iter=n_iter,
        window_sizes=window_sizes,
        seed=seed,
        internal_batch_size=internal_batch_size,
    )
    return RefinementReport.from_maps(
        model,
        x,
        target,
        prior_maps,
        refined,
        masks,
        additional_forward_args=additional_forward_args,
        **dict(measure_kwargs or {}),
    )
