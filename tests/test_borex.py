"""BOREx as a Captum attribution: priors, quality, reproducibility, batching, bad input, state."""

from __future__ import annotations

import pytest
import torch
from captum.attr import (
    FeatureAblation,
    IntegratedGradients,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_borex import RISE, BOREx, BORExDetails, BORExSettings
from captum_borex.metrics import deletion_auc, insertion_auc, pointing_game

FAST = dict(n_iter=8, seed=0)


def test_name_and_captum_properties(cnn):
    borex = BOREx(cnn)
    assert borex.get_name() == "BOREx"
    assert borex.multiplies_by_inputs is False
    assert hasattr(borex.attribute, "__wrapped__")


PRIORS = {
    "none": (lambda m: None, {}),
    "layer_gradcam": (lambda m: LayerGradCam(m, m.features[-1]), {}),
    "integrated_gradients": (lambda m: IntegratedGradients(m), {"n_steps": 8}),
    "saliency": (lambda m: Saliency(m), {}),
    "occlusion": (
        lambda m: Occlusion(m),
        {"sliding_window_shapes": (3, 8, 8), "strides": (3, 4, 4)},
    ),
    "feature_ablation": (
        lambda m: FeatureAblation(m),
        {
            "feature_mask": (
                torch.arange(64).view(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)
            )[None, None]
        },
    ),
    "lime": (
        lambda m: Lime(m),
        {
            "n_samples": 20,
            "feature_mask": torch.arange(16)
            .view(4, 4)
            .repeat_interleave(8, 0)
            .repeat_interleave(8, 1)[None, None],
        },
    ),
    "noise_tunnel": (
        lambda m: NoiseTunnel(Saliency(m)),
        {"nt_samples": 3, "nt_type": "smoothgrad"},
    ),
    "rise": (lambda m: RISE(m), {"n_masks": 20}),
}


@pytest.mark.parametrize("name", list(PRIORS))
def test_every_prior_kind_works(cnn, shapes_val, name):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    make, kwargs = PRIORS[name]
    details = BOREx(cnn, prior=make(cnn)).attribute(
        x, target=y, prior_kwargs=kwargs, return_details=True, **FAST
    )
    assert isinstance(details, BORExDetails)
    attr = details.attributions
    assert attr.shape == x.shape and attr.is_contiguous() and attr.dtype == x.dtype
    assert torch.isfinite(attr).all()
    assert torch.equal(attr[:, 0], attr[:, 1])
    assert details.prior.shape == (3, 32, 32) and details.uncertainty.shape == (3, 32, 32)
    assert (details.uncertainty >= 0).all()
    assert details.centres.shape == (3, 8, 2) and details.scores.shape == (3, 8)
    assert details.scores.abs().max() <= 1
    if name != "none":
        assert details.prior.abs().mean(dim=(1, 2)).allclose(torch.full((3,), 0.1), atol=1e-4)


@pytest.mark.parametrize("layout", ["nhw", "n1hw", "input_shaped", "layer_sized", "callable"])
def test_tensor_and_callable_priors(cnn, shapes_val, layout):
    images, labels, masks = shapes_val
    x, y = images[:2], labels[:2]
    base = masks[:2].float()
    prior = {
        "nhw": base,
        "n1hw": base[:, None],
        "input_shaped": base[:, None].expand(-1, 3, -1, -1) / 3,
        "layer_sized": torch.nn.functional.avg_pool2d(base[:, None], 4),
        "callable": lambda inputs, target: base[: len(inputs)],
    }[layout]
    details = BOREx(cnn, prior=prior).attribute(x, target=y, return_details=True, **FAST)
    expected = base * 0.1 / base.mean(dim=(1, 2), keepdim=True)
    if layout == "layer_sized":
        assert details.prior.shape == (2, 32, 32)
    else:
        torch.testing.assert_close(details.prior, expected)


def test_refining_a_weak_prior_improves_faithfulness_and_localisation(cnn, shapes_val):
    images, labels, masks = shapes_val
    x, y, m = images[:16], labels[:16], masks[:16]
    rise = RISE(cnn)
    weak = rise.attribute(x, target=y, n_masks=30, seed=0)
    refined = BOREx(cnn, prior=rise).attribute(
        x, target=y, seed=0, prior_kwargs={"n_masks": 30, "seed": 0}
    )
    del_weak = deletion_auc(cnn, x, weak, target=y).mean()
    del_refined = deletion_auc(cnn, x, refined, target=y).mean()
    ins_weak = insertion_auc(cnn, x, weak, target=y).mean()
    ins_refined = insertion_auc(cnn, x, refined, target=y).mean()
    hit_weak = pointing_game(weak, m, tolerance=1).float().mean()
    hit_refined = pointing_game(refined, m, tolerance=1).float().mean()
    assert del_refined < del_weak - 0.05, (del_weak, del_refined)
    assert ins_refined > ins_weak + 0.02, (ins_weak, ins_refined)
    assert hit_refined >= hit_weak + 0.25, (hit_weak, hit_refined)


def test_seed_gives_bitwise_reproducible_maps_without_touching_global_rng(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    borex = BOREx(cnn, prior=RISE(cnn))
    state = torch.get_rng_state()
    first = borex.attribute(x, target=y, n_iter=10, seed=7, prior_kwargs={"n_masks": 10})
    assert torch.equal(torch.get_rng_state(), state)
    second = borex.attribute(x, target=y, n_iter=10, seed=7, prior_kwargs={"n_masks": 10})
    assert torch.equal(first, second)
    other = borex.attribute(x, target=y, n_iter=10, seed=8, prior_kwargs={"n_masks": 10})
    assert not torch.equal(first, other)


def test_batch_invariance(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:5], labels[:5]
    borex = BOREx(cnn, prior=RISE(cnn))
    kwargs = dict(n_iter=15, seed=3, prior_kwargs={"n_masks": 20, "seed": 1})
    together = borex.attribute(x, target=y, **kwargs)
    alone = borex.attribute(x[3:4], target=y[3:4], **kwargs)
    torch.testing.assert_close(together[3:4], alone, atol=1e-4, rtol=1e-4)
    order = torch.tensor([4, 3, 2, 1, 0])
    shuffled = borex.attribute(x[order], target=y[order], **kwargs)
    torch.testing.assert_close(shuffled[order.argsort()], together, atol=1e-4, rtol=1e-4)


def test_target_forms_agree(cnn, shapes_val):
    images, labels, _ = shapes_val
    x = images[:2]
    borex = BOREx(cnn)
    as_tensor = borex.attribute(x, target=torch.tensor([1, 1]), **FAST)
    as_int = borex.attribute(x, target=1, **FAST)
    as_list = borex.attribute(x, target=[1, 1], **FAST)
    assert torch.equal(as_tensor, as_int) and torch.equal(as_int, as_list)


def test_tuple_in_tuple_out_and_internal_batch_size(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    borex = BOREx(cnn)
    plain = borex.attribute(x, target=y, **FAST)
    (as_tuple,) = borex.attribute((x,), target=y, **FAST)
    chunked = borex.attribute(x, target=y, internal_batch_size=4, **FAST)
    torch.testing.assert_close(plain, as_tuple)
    torch.testing.assert_close(plain, chunked, atol=1e-5, rtol=1e-5)


class ScaledModel(nn.Module):
    """A model with an extra per-sample forward argument."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: float) -> torch.Tensor:
        return self.inner(x) * scale[:, None] + bias


def test_additional_forward_args_follow_their_inputs(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:3], labels[:3]
    model = ScaledModel(cnn)
    scale = torch.tensor([1.0, 2.0, 0.5])
    with_args = BOREx(model).attribute(x, target=y, additional_forward_args=(scale, 0.0), **FAST)
    alone = BOREx(model).attribute(
        x[1:2], target=y[1:2], additional_forward_args=(scale[1:2], 0.0), **FAST
    )
    torch.testing.assert_close(with_args[1:2], alone, atol=1e-4, rtol=1e-4)


def test_noise_tunnel_infidelity_and_sensitivity_accept_borex(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    borex = BOREx(cnn)
    smooth = NoiseTunnel(borex).attribute(
        x, target=y, nt_samples=2, nt_type="smoothgrad", stdevs=0.01, n_iter=4, seed=0
    )
    assert smooth.shape == x.shape
    attributions = borex.attribute(x, target=y, n_iter=4, seed=0)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    score = infidelity(cnn, perturb, x, attributions, target=y, n_perturb_samples=2)
    assert score.shape == (2,) and torch.isfinite(score).all()
    sens = sensitivity_max(borex.attribute, x, target=y, n_perturb_samples=1, n_iter=3, seed=0)
    assert sens.shape == (2,) and torch.isfinite(sens).all()


def test_options_and_published_settings(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    published = BOREx(cnn, prior=Saliency(cnn), settings="published").attribute(
        x, target=y, n_iter=6, seed=0
    )
    several_settings = BORExSettings(
        surrogate="windows", windows_per_step=3, prior_mean="window", acquisition_stride=3
    )
    several = BOREx(cnn, prior=Saliency(cnn), settings=several_settings).attribute(
        x, target=y, n_iter=3, seed=0, window_sizes=(3, 5, 8)
    )
    probabilities = BOREx(
        lambda inp: torch.softmax(cnn(inp), 1), settings=BORExSettings(apply_softmax=False)
    ).attribute(x, target=y, **FAST)
    for out in (published, several, probabilities):
        assert out.shape == x.shape and torch.isfinite(out).all()
    details = BOREx(cnn, settings=BORExSettings(windows_per_step=3)).attribute(
        x, target=y, n_iter=3, seed=0, return_details=True
    )
    assert details.centres.shape == (2, 9, 2)
    assert details.settings == BORExSettings(windows_per_step=3)


def test_progress_bar(cnn, shapes_val, capsys):
    images, labels, _ = shapes_val
    BOREx(cnn).attribute(images[:1], target=labels[:1], n_iter=3, seed=0, show_progress=True)
    assert "BOREx attribution" in capsys.readouterr().err


class FailingPrior(LayerGradCam):
    def attribute(self, *args, **kwargs):
        self.layer.register_forward_hook(lambda *a: None)
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "case, message",
    [
        ("target_range", "target 7 is out of range"),
        ("three_d", "inputs must be a batch"),
        ("nan", "inputs contains NaN"),
        ("prior_shape", "prior tensor has shape"),
        ("prior_fails", "prior FailingPrior.attribute failed: RuntimeError: boom"),
        ("n_iter", "n_iter must be >= 1"),
        ("window", "window_sizes: half-size 20"),
        ("baselines", "baselines of shape"),
        ("target_missing", "target is required"),
    ],
)
def test_bad_input_raises_clear_value_error(cnn, shapes_val, case, message):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    borex = BOREx(cnn)
    call = {
        "target_range": lambda: borex.attribute(x, target=7),
        "three_d": lambda: borex.attribute(x[0], target=0),
        "nan": lambda: borex.attribute(
            x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), target=y
        ),
        "prior_shape": lambda: BOREx(cnn, prior=torch.rand(2, 16, 20)).attribute(x, target=y),
        "prior_fails": lambda: BOREx(cnn, prior=FailingPrior(cnn, cnn.features[-1])).attribute(
            x, target=y
        ),
        "n_iter": lambda: borex.attribute(x, target=y, n_iter=0),
        "window": lambda: borex.attribute(x, target=y, window_sizes=(4, 20)),
        "baselines": lambda: borex.attribute(x, target=y, baselines=torch.zeros(5, 3, 32, 32)),
        "target_missing": lambda: borex.attribute(x),
    }[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_wrong_types_raise_type_error(cnn, shapes_val):
    images, labels, _ = shapes_val
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        BOREx(cnn).attribute([images[:1]], target=0)
    with pytest.raises(TypeError, match="prior must be"):
        BOREx(cnn, prior=3)
    with pytest.raises(TypeError, match="n_iter must be an int"):
        BOREx(cnn).attribute(images[:1], target=0, n_iter=2.5)


def snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        [b.clone() for b in model.buffers()],
    )


class BatchNormCNN(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.inner = inner

    def forward(self, x):
        return self.inner(self.norm(x))


@pytest.mark.parametrize("fails", [False, True])
def test_model_and_inputs_are_left_exactly_as_they_were(trained_cnn, shapes_val, fails):
    images, labels, _ = shapes_val
    model = BatchNormCNN(trained_cnn)
    model.train()
    model.inner.features[0].eval()
    model.inner.head.requires_grad_(False)
    model.inner.features[0].weight.requires_grad_(True)
    model.inner.features[0].weight.grad = torch.ones_like(model.inner.features[0].weight)
    model.inner.features[2].register_forward_hook(lambda *a: None)
    x = images[:2].clone().requires_grad_(True)
    before = snapshot(model)
    x_before = x.detach().clone()
    prior = (FailingPrior if fails else LayerGradCam)(model, model.inner.features[-1])
    borex = BOREx(model, prior=prior)
    if fails:
        with pytest.raises(ValueError):
            borex.attribute(x, target=labels[:2], n_iter=3, seed=0)
    else:
        borex.attribute(x, target=labels[:2], n_iter=3, seed=0)
    after = snapshot(model)
    assert before[0] == after[0]
    for (rg_a, g_a), (rg_b, g_b) in zip(before[1], after[1]):
        assert rg_a == rg_b
        assert (g_a is None) == (g_b is None) and (g_a is None or torch.equal(g_a, g_b))
    assert before[2] == after[2]
    for a, b in zip(before[3], after[3]):
        assert torch.equal(a, b)
    assert x.requires_grad and x.grad is None and torch.equal(x.detach(), x_before)
    trained_cnn.eval()
    trained_cnn.requires_grad_(False)
    trained_cnn.features[0].weight.grad = None


def test_gradient_prior_works_under_inference_mode(cnn, shapes_val):
    images, labels, _ = shapes_val
    with torch.inference_mode():
        x = images[:2].clone()
        out = BOREx(cnn, prior=Saliency(cnn)).attribute(x, target=labels[:2], **FAST)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_exact_map_matches_the_lattice_map(cnn, shapes_val):
    images, labels, _ = shapes_val
    x, y = images[:2], labels[:2]
    for stride, tolerance in ((1, 1e-6), (3, 0.05)):
        settings = BORExSettings(surrogate="windows", acquisition_stride=stride)
        kwargs = dict(target=y, n_iter=10, seed=0, return_details=True)
        lattice = BOREx(cnn, Saliency(cnn), settings).attribute(x, **kwargs)
        exact = BOREx(cnn, Saliency(cnn), settings.replace(exact_map=True)).attribute(x, **kwargs)
        span = exact.gp_map.amax() - exact.gp_map.amin()
        assert (lattice.gp_map - exact.gp_map).abs().max() <= tolerance * span
        assert (lattice.uncertainty - exact.uncertainty).abs().max() <= tolerance + 1e-6
