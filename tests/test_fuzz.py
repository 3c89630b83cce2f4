"""Property-based fuzz: every call ends in a finite, correctly shaped result or a clear
ValueError / TypeError, and leaves the model, the inputs and the global RNG as they were.

The number of examples comes from the Hypothesis profile (``tests/conftest.py``): "ci" by
default, ``HYPOTHESIS_PROFILE=thorough`` for a long run by hand.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from hypothesis import event, given
from hypothesis import strategies as st
from torch import Tensor, nn

from captum_borex import BOREx
from captum_borex.attr.cameras import CAMERAS
from captum_borex.attr.rise import RISE
from captum_borex.metrics import deletion_auc, insertion_auc

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_CLASSES = 3
MODEL_KINDS = ("eval", "train", "standardise", "inf", "constant")


class Tiny(nn.Module):
    """A few conv channels; ``kind`` picks a degenerate behaviour."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "standardise":  # per-image standardisation, no epsilon
            flat = x.flatten(1)
            x = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(x)
        out = self.head(self.drop(self.norm(self.conv(x)).relu().mean((2, 3))))
        if self.kind == "inf":
            out = out / (x.flatten(1).amax(1, keepdim=True) > 0.99).to(out.dtype).sub(1).abs()
        if self.kind == "constant":
            out = out * 0
        return out


@functools.cache
def model_of(channels: int, kind: str, dtype: torch.dtype) -> Tiny:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Tiny(channels, kind).to(dtype)
    return model.train() if kind == "train" else model.eval()


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    """A model, inputs (sometimes non-finite), a target of any accepted form, baselines."""
    n = draw(st.integers(1, 3))
    channels = draw(st.sampled_from((1, 3)))
    height, width = draw(st.integers(8, 16)), draw(st.integers(8, 16))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    model_dtype = dtype if draw(st.integers(0, 9)) else torch.float32
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    inputs = torch.rand(n, channels, height, width, generator=generator, dtype=dtype)
    poison = draw(st.sampled_from((None,) * 8 + (float("nan"), float("inf"))))
    if poison is not None:
        inputs[-1, 0, 0, 0] = poison
    classes = torch.arange(n) % N_CLASSES
    targets = {
        "int": draw(st.integers(0, N_CLASSES - 1)),
        "bad int": draw(st.sampled_from((-1, N_CLASSES))),
        "none": None,
        "tuple": (draw(st.integers(0, N_CLASSES - 1)),),
        "bad tuple": draw(st.sampled_from(((-1,), (N_CLASSES,), (0, 0)))),
        "tensor": classes,
        "column": classes.view(n, 1),
        "list": classes.tolist(),
        "float tensor": classes.float(),
    }
    target = targets[
        draw(st.sampled_from(("int", "tensor", "column", "list", "tuple") * 3 + tuple(targets)))
    ]
    baselines = {
        "zero": 0.0,
        "half": 0.5,
        "negative": -1.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "tensor": torch.full((1, channels, 1, 1), 0.25, dtype=dtype),
        "nan tensor": torch.full((n, channels, height, width), float("nan")),
    }
    base = draw(st.sampled_from(("zero", "half", "tensor") * 3 + tuple(baselines)))
    kind = draw(st.sampled_from(MODEL_KINDS))
    return {
        "model": model_of(channels, kind, model_dtype),
        "inputs": inputs,
        "target": target,
        "baselines": baselines[base],
        "wrap": draw(st.sampled_from(("module", "lambda", "partial"))),
    }


def forward_of(case: dict[str, Any]) -> Callable[..., Tensor]:
    model = case["model"]
    if case["wrap"] == "lambda":
        return lambda x: model(x)
    if case["wrap"] == "partial":
        return functools.partial(model.forward)
    return model


@contextmanager
def unchanged(case: dict[str, Any]) -> Iterator[None]:
    """Assert that the model, the inputs and every global RNG are as they were."""
    model, inputs = case["model"], case["inputs"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    values = inputs.clone()
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    yield
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.allclose(inputs, values, equal_nan=True) and not inputs.requires_grad
    assert torch.equal(torch.get_rng_state(), rng[0]), "torch's global RNG advanced"
    assert random.getstate() == rng[1] and np.array_equal(np.random.get_state()[1], rng[2])


def finite_or_clear_error(case: dict[str, Any], call: Callable[[], Any], shape: tuple) -> None:
    """Run ``call``: a finite tensor of ``shape``, or a ValueError / TypeError."""
    with unchanged(case):
        try:
            out = call()
        except (ValueError, TypeError) as err:
            assert str(err), "an error without a message"
            event(f"{type(err).__name__}: {str(err)[:40]}")
            return
    event("result")
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == shape, (out.shape, shape)
    assert bool(torch.isfinite(out).all()), "non-finite result without an error"


@given(
    case=cases(),
    prior=st.sampled_from(("none", "tensor", "nan tensor", "callable", "saliency")),
    window_sizes=st.one_of(
        st.none(), st.lists(st.sampled_from((1, 2, 3, 4, 2, 3, 0, 12)), min_size=1, max_size=2)
    ),
    n_iter=st.integers(1, 2),
)
def test_fuzz_borex(case: dict, prior: str, window_sizes: list | None, n_iter: int) -> None:
    x = case["inputs"]
    priors = {
        "none": None,
        "tensor": torch.linspace(0, 1, x[0, 0].numel()).view(x.shape[2:]).expand(len(x), -1, -1),
        "nan tensor": torch.full((len(x), *x.shape[2:]), float("nan")),
        "callable": lambda inputs, target: inputs.sum(1),
        "saliency": Saliency(forward_of(case)),
    }
    borex = BOREx(forward_of(case), prior=priors[prior])
    call = functools.partial(
        borex.attribute,
        x,
        target=case["target"],
        baselines=case["baselines"],
        n_iter=n_iter,
        window_sizes=window_sizes,
        seed=0,
    )
    finite_or_clear_error(case, call, tuple(x.shape))


@given(case=cases(), n_masks=st.integers(1, 6), cells=st.sampled_from((1, 2, 3, 4, 5, 8, 20)))
def test_fuzz_rise(case: dict, n_masks: int, cells: int) -> None:
    rise = RISE(forward_of(case))
    call = functools.partial(
        rise.attribute,
        case["inputs"],
        target=case["target"],
        baselines=case["baselines"],
        n_masks=n_masks,
        cells=cells,
        seed=1,
    )
    finite_or_clear_error(case, call, tuple(case["inputs"].shape))


@given(
    case=cases(),
    scales=st.sampled_from((None, (1.0,), (0.5, 1.0), (1.5,), (1.0,), (0.5, 1.0), (), (-1.0,))),
)
def test_fuzz_cameras(case: dict, scales: tuple | None) -> None:
    cameras = CAMERAS(forward_of(case), case["model"].conv)
    x = case["inputs"]
    call = functools.partial(cameras.attribute, x, target=case["target"], scales=scales)
    finite_or_clear_error(case, call, (len(x), 1, *x.shape[2:]))


@given(
    case=cases(),
    measure=st.sampled_from((deletion_auc, insertion_auc)),
    substrate=st.sampled_from(("zeros", "blur", "mean", 0.5) * 3 + (float("nan"), "nope")),
    n_steps=st.integers(1, 6),
)
def test_fuzz_measures(case: dict, measure: Callable, substrate: Any, n_steps: int) -> None:
    x = case["inputs"]
    maps = torch.rand(len(x), *x.shape[2:], generator=torch.Generator().manual_seed(0))
    call = functools.partial(
        measure, forward_of(case), x, maps, target=case["target"], n_steps=n_steps
    )
    finite_or_clear_error(case, functools.partial(call, substrate=substrate), (len(x),))
