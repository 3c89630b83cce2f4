"""What a BOREx window query costs and observes: the perturbed inputs, the model's scores
and the evidence ``tanh(gain * delta / 2)``, and the reference scores before the first window."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_borex._checks import warn_at_caller
from captum_borex._forward import target_scores
from captum_borex._substrates import make_substrate
from captum_borex.attr.settings import NEEDS
from captum_borex.bo.windows import WindowSpace

#: A baseline the model gives at least this probability of the target makes the keep queries
#: uninformative.
BASELINE_WARNING_PROBABILITY = 0.5


def warn_if_baseline_is_the_target(
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
        warn_at_caller(opening + advice + ", or check which inputs with the model's output on them")
    return probability


def keep_baselines_like(keep_baselines: Any, baselines: Tensor, inputs: Tensor) -> Tensor:
    """The background of every keep query, shaped like ``inputs``."""
    if keep_baselines is None:
        return baselines
    return make_substrate(keep_baselines, inputs, "keep_baselines")


class WindowObjective:
    """Scores windows: ``tanh(gain * delta / 2)`` for each image's windows, where ``delta``
    is ``s(keep) - s(delete)`` (``"both"``), ``s(input) - s(delete)`` (``"delete"``) or
    ``s(keep) - s(baseline)`` (``"keep"``). A deleted window becomes ``baselines``; a kept
    window is shown on ``keep_baselines``. ``input_scores`` and ``keep_scores`` are
    ``s(input)`` and ``s(keep_baselines)`` where the caller has scored them already; None
    scores them here when needed. ``extra`` names more kinds of evidence to return for the
    same windows, from the same model calls (see :data:`~captum_borex.bo.optimizer.Objective`).
    ``linear=True`` returns the change of score itself, zeroed at "no effect" (as
    :meth:`probability_change` does for maps), as the field model observes it
    (:mod:`captum_borex.bo.field`).
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
        linear: bool = False,
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
        self.linear = linear
        evidence = {queries, *extra}
        batch = inputs.shape[0]
        rows = torch.arange(batch, device=inputs.device)
        # Evidence from one kind of query compares it with the unperturbed input (delete)
        # or the keep baselines (keep), scored once here unless given; both scores also
        # place the zero of "both" evidence (see probability_change).
        if evidence & {"both", "delete"} and input_scores is None:
            input_scores = self._scores(inputs, rows, batch)
        if evidence & {"both", "keep"} and keep_scores is None:
            keep_scores = self._scores(keep_baselines, rows, batch)
        self.input_scores = input_scores
        self.keep_scores = keep_scores

    def scores(self, inputs: Tensor, rows: Tensor) -> Tensor:
        """The target's score of each of ``inputs``, row ``rows[i]`` of the batch's (its
        target and forward arguments)."""
        return self._scores(inputs, rows, self.inputs.shape[0])

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
            delta = delta.view(batch, q).to(torch.float64)
            if self.linear:
                return self._zeroed(name, delta)
            return torch.tanh(self.gain * delta / 2)

        y = evidence(self.queries)
        if not self.extra:
            return y
        return y, torch.stack([evidence(name) for name in self.extra], -1)

    def probability_change(self, name: str, size_maps: Tensor) -> Tensor:
        """The map of evidence ``name`` in the scores' units, from its size maps on the GP's
        scale.

        The GP observes ``y = tanh(gain * delta / 2)``; each size's map is turned back into
        ``delta`` (so windows of different sizes are averaged in one unit), the sizes are
        averaged, and the zero is moved to "no effect": for "delete", ``s(input) -
        s(delete)``, and for "keep", ``s(keep) - s(baseline)``, as they are; for "both", the
        mean of the two, ``(delta + s(input) - s(baseline)) / 2``, since ``s(keep) -
        s(delete)`` is their sum less ``s(input) - s(baseline)``. Positive is evidence for
        the target, negative against, in probabilities (or the model's output units with
        ``apply_softmax=False``).

        Args:
            name: "both", "delete" or "keep".
            size_maps: ``(N, S, *spatial)`` the map of each window size on the GP's scale.

        Returns:
            ``(N, *spatial)`` the map.
        """
        # A change of probability lies in [-1, 1]; the GP's mean may overshoot its image.
        limit = math.tanh(self.gain / 2) if self.apply_softmax else 1.0 - 1e-6
        delta = (2.0 / self.gain * torch.atanh(size_maps.clamp(-limit, limit))).mean(1)
        return self._zeroed(name, delta)

    def _zeroed(self, name: str, delta: Tensor) -> Tensor:
        """Evidence ``delta`` with its zero at "no effect": "both" becomes the mean of the
        delete and keep changes, ``(delta + s(input) - s(keep baseline)) / 2``."""
        if name != "both":
            return delta
        reference = cast(Tensor, self.input_scores) - cast(Tensor, self.keep_scores)
        reference = reference.to(delta).view(-1, *(1,) * (delta.dim() - 1))
        return (delta + reference) / 2

    def total_effect(self) -> Tensor:
        """``(N,)`` what the whole input adds to the score over the keep baselines (the
        input's score alone with ``queries="delete"``, whose baseline is not scored)."""
        scores = cast(Tensor, self.input_scores).to(torch.float64)
        if self.keep_scores is None:
            return scores
        return scores - self.keep_scores.to(torch.float64)
