"""Clear errors, forked RNGs, train-mode warnings and wrapped models (issue 19, points 3-6, 8)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from captum.attr import NoiseTunnel, Occlusion
from torch import Tensor, nn

from captum_borex import BOREx, BORExSettings
from captum_borex.attr.cameras import CAMERAS
from captum_borex.attr.rise import RISE
from captum_borex.metrics import deletion_auc, insertion_auc

FAST = {"n_iter": 1, "window_sizes": (2,), "seed": 0}


class Net(nn.Module):
    def __init__(self, standardise: bool = False) -> None:
        super().__init__()
        self.standardise = standardise
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        if self.standardise:  # per-image standardisation without an epsilon
            flat = x.flatten(1)
            x = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(x)
        return self.head(self.drop(self.norm(self.conv(x)).relu().mean((2, 3))))


def net(standardise: bool = False, train: bool = False) -> Net:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net(standardise)
    return model.train(train)


IMAGES = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))

#: Every method and measure, as ``name -> call(forward_func, model, **kwargs)``.
CALLS = {
    "BOREx": lambda f, m, **kw: BOREx(f).attribute(IMAGES, target=0, **{**FAST, **kw}),
    "RISE": lambda f, m, **kw: RISE(f).attribute(IMAGES, target=0, n_masks=4, seed=0, **kw),
    "CAMERAS": lambda f, m, **kw: CAMERAS(f, m.conv).attribute(IMAGES, 0, scales=(1,), **kw),
    "deletion": lambda f, m, **kw: deletion_auc(f, IMAGES, IMAGES, 0, n_steps=4, **kw),
    "insertion": lambda f, m, **kw: insertion_auc(f, IMAGES, IMAGES, 0, n_steps=4, **kw),
}


# 3. Non-finite outputs, baselines and substrates


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("BOREx", {}), ("RISE", {"cells": 1, "keep_prob": 0.01}), ("deletion", {})],
)
def test_a_model_that_gives_nan_on_the_all_black_step_raises(name: str, kwargs: dict) -> None:
    model = net(standardise=True).eval()
    # BOREx meets the all-black input when its keep queries show windows on the baseline.
    on_black = BOREx(model, settings=BORExSettings(keep_baselines=None))
    calls = {**CALLS, "BOREx": lambda f, m, **kw: on_black.attribute(IMAGES, target=0, **FAST)}
    with pytest.raises(ValueError, match=r"forward_func returned NaN or Inf for perturbed copies"):
        calls[name](model, model, **kwargs)


def test_non_finite_outputs_on_the_inputs_raise_everywhere() -> None:
    model = net().eval()

    def broken(x: Tensor) -> Tensor:
        out = model(x)
        return torch.where(torch.arange(len(x)).view(-1, 1) == 1, float("inf"), out)

    for call in CALLS.values():
        with pytest.raises(ValueError, match=r"NaN or Inf for inputs \[1\]"):
            call(broken, model)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_number_baselines_and_substrates_raise(value: float) -> None:
    model = net().eval()
    with pytest.raises(ValueError, match="baselines must be a finite number"):
        CALLS["BOREx"](model, model, baselines=value)
    with pytest.raises(ValueError, match="baselines must be a finite number"):
        CALLS["RISE"](model, model, baselines=value)
    with pytest.raises(ValueError, match="keep_baselines"):
        BORExSettings(keep_baselines=value)
    for name in ("deletion", "insertion"):
        with pytest.raises(ValueError, match=r"substrate contains NaN or Inf values \(inputs"):
            CALLS[name](model, model, substrate=value)


# 4. Seeds and train mode; 5. wrapped models


def wrappers(model: nn.Module) -> dict[str, object]:
    return {
        "module": model,
        "lambda": lambda x: model(x),
        "partial": functools.partial(model.forward),
        "bound method": model.forward,
    }


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("wrap", ["module", "lambda", "partial", "bound method"])
def test_train_mode_models_are_left_alone_warned_about_and_seeded(name: str, wrap: str) -> None:
    model = net(train=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forward = wrappers(model)[wrap]
    rng = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = CALLS[name](forward, model)
    second = CALLS[name](forward, model)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG advanced"
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # BatchNorm statistics untouched
    assert model.training
    training = [w for w in caught if "training mode" in str(w.message)]
    assert len(training) == 1 and "model.eval()" in str(training[0].message)
    assert training[0].filename == __file__, "the warning should name the caller's line"
    if name in ("BOREx", "RISE"):  # same seed, same map, Dropout included
        assert torch.equal(first, second)


# 6. Targets of every form are range-checked


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(
    ("target", "match"),
    [
        ((7,), r"target \(7,\) is out of range"),
        ((-1,), r"target \(-1,\) is out of range"),
        ((0, 0), r"target \(0, 0\) has 2 indices but the model's output has 1 dimension"),
        ([(0,), (3,)], r"target \(3,\) is out of range"),
        (-1, "target -1 is out of range"),
        (torch.tensor([[0], [5]]), "target 5 is out of range"),
    ],
)
def test_targets_of_every_form_are_range_checked(name: str, target: object, match: str) -> None:
    model = net().eval()
    call = {
        "BOREx": lambda: BOREx(model).attribute(IMAGES, target=target, **FAST),
        "RISE": lambda: RISE(model).attribute(IMAGES, target=target, n_masks=2, seed=0),
        "CAMERAS": lambda: CAMERAS(model, model.conv).attribute(IMAGES, target, scales=(1,)),
        "deletion": lambda: deletion_auc(model, IMAGES, IMAGES, target, n_steps=2),
        "insertion": lambda: insertion_auc(model, IMAGES, IMAGES, target, n_steps=2),
    }[name]
    with pytest.raises(ValueError, match=match):
        call()


def test_cameras_takes_column_targets_like_the_others() -> None:
    model = net().eval()
    cameras = CAMERAS(model, model.conv)
    column = cameras.attribute(IMAGES, torch.tensor([[0], [2]]), scales=(1,))
    flat = cameras.attribute(IMAGES, torch.tensor([0, 2]), scales=(1,))
    torch.testing.assert_close(column, flat)


# 8. Errors that say what to do


def test_errors_say_what_to_do() -> None:
    model = net().eval()
    borex = BOREx(model, prior=Occlusion(model))
    with pytest.raises(ValueError, match=r"prior_kwargs=\{'sliding_window_shapes': \(3, 16, 16\)"):
        borex.attribute(IMAGES, target=0, **FAST)
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        BOREx(model).attribute(IMAGES.permute(0, 2, 3, 1).contiguous(), target=0, **FAST)
    with pytest.raises(ValueError, match=r"inputs are torch.float64.*inputs.to\(torch.float32\)"):
        BOREx(model).attribute(IMAGES.double(), target=0, **FAST)
    for wrapped in (lambda x: (model(x),), lambda x: {"logits": model(x)}):
        with pytest.raises(ValueError, match=r"lambda x: model\(x\).logits"):
            RISE(wrapped).attribute(IMAGES, target=0, n_masks=2, seed=0)
    tunnel = NoiseTunnel(BOREx(model))
    with pytest.raises(ValueError, match="return_details=True cannot be used under NoiseTunnel"):
        tunnel.attribute(IMAGES, nt_samples=2, target=0, return_details=True, **FAST)
    maps = tunnel.attribute(IMAGES, nt_samples=2, target=0, **FAST)
    assert maps.shape == IMAGES.shape
    with pytest.raises(ValueError, match="lengthscale"):
        BORExSettings(lengthscale=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="scales must hold positive finite numbers"):
        CAMERAS(model, model.conv).attribute(IMAGES, 0, scales=(float("inf"),))
