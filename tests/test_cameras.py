import copy
import weakref

import pytest
import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import GradientAttribution, LayerAttribution, LayerGradCam, NoiseTunnel
from scipy.stats import spearmanr
from torch import nn

from captum_borex.attr._priors import normalise_prior
from captum_borex.attr.borex import BOREx
from captum_borex.attr.cameras import CAMERAS, DEFAULT_SCALES
from captum_borex.metrics import energy_pointing_game, pointing_game
from captum_borex.synthetic import make_shapes, train_classifier


class PooledCNN(nn.Module):
    """Three 2x poolings: the last conv block sees a 32-pixel image as 4 x 4 cells.

    ``pool="mean"`` averages instead of taking maxima (locally and globally), which makes the
    gradients continuous in the input: no argmax can flip between a batched and a single
    image's float rounding.
    """

    def __init__(self, width: int = 8, n_classes: int = 3, pool: str = "max") -> None:
        super().__init__()
        w = width
        down = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            down(2),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            down(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            down(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = pool
        self.head = nn.Linear(2 * w, n_classes)

    def forward(self, x):
        f = self.features(x)
        return self.head(f.amax((-2, -1)) if self.pool == "max" else f.mean((-2, -1)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is about as fast, and far faster on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_at_two_scales(net: nn.Module, epochs: int = 8, seed: int = 0) -> nn.Module:
    """Train on synthetic shapes shown at 1x or 2x their size (one scale per batch).

    CAMERAS assumes a model that still recognises an upsampled image, as ImageNet models
    trained with random resized crops do. A model that saw a single scale is fooled by the
    enlarged inputs, and CAMERAS can then localise worse than Grad-CAM.
    """
    images, labels, _ = make_shapes(800, seed=0)
    return train_classifier(net, images, labels, epochs=epochs, seed=seed, scales=(1, 2))


@pytest.fixture(scope="module")
def model() -> PooledCNN:
    """A PooledCNN trained at 1x and 2x (about 100% validation accuracy at both)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PooledCNN()
    return train_at_two_scales(net).requires_grad_(False)


@pytest.fixture(scope="module")
def smooth() -> PooledCNN:
    """An untrained average-pooling PooledCNN, for exact comparisons."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return PooledCNN(pool="mean").eval()


@pytest.fixture
def data(shapes_val):
    images, labels, masks = shapes_val
    return images[:32], labels[:32], masks[:32]


def layer_of(net: PooledCNN) -> nn.Module:
    return net.features[-1]


def test_name_and_captum_types(model):
    cameras = CAMERAS(model, layer_of(model))
    assert CAMERAS.get_name() == "CAMERAS"
    assert isinstance(cameras, LayerAttribution) and isinstance(cameras, GradientAttribution)
    assert cameras.layer is layer_of(model)
    assert not cameras.multiplies_by_inputs
    assert DEFAULT_SCALES[0] == 1.0 and max(DEFAULT_SCALES) == 4.0


def test_shapes_layouts_and_normalisation(model, data):
    images, labels, _ = data
    x = images[:3]
    cameras = CAMERAS(model, layer_of(model))
    maps = cameras.attribute(x, target=labels[:3], scales=(1, 2))
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == x.dtype and not maps.requires_grad
    assert maps.min() >= 0
    torch.testing.assert_close(maps.flatten(1).amax(1), torch.ones(3))
    full = cameras.attribute(x, target=labels[:3], scales=(1, 2), attribute_to_input_shape=True)
    assert full.shape == x.shape and full.is_contiguous()
    torch.testing.assert_close(full, maps.expand_as(x))
    (as_tuple,) = cameras.attribute((x,), target=labels[:3], scales=(1, 2))
    torch.testing.assert_close(as_tuple, maps)
    raw = cameras.attribute(x, target=labels[:3], scales=(1, 2), normalise=False)
    peak = raw.flatten(1).amax(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(raw / peak, maps)


def test_noise_tunnel_can_wrap_cameras(smooth, data):
    images, labels, _ = data
    x, target = images[:2], labels[:2]
    cameras = CAMERAS(smooth, layer_of(smooth))
    plain = cameras.attribute(x, target=target, scales=(1, 2))
    tunnel = NoiseTunnel(cameras).attribute(
        x, target=target, nt_samples=3, stdevs=0.0, scales=(1, 2)
    )
    torch.testing.assert_close(tunnel, plain)
    noisy = NoiseTunnel(cameras).attribute(
        x, target=target, nt_samples=3, stdevs=0.2, scales=(1, 2)
    )
    assert noisy.shape == plain.shape and (noisy - plain).abs().amax() > 1e-3


def test_one_scale_equals_grad_cam_when_gradients_are_flat():
    # With global average pooling the gradient is constant over space, so for one scale
    # sum_k up(A_k) * g_k = up(sum_k g_k A_k): Grad-CAM upsampled, before the ReLU.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PooledCNN(pool="mean").eval()
        x = torch.randn(3, 3, 32, 32)
    net.features[-1] = nn.Identity()  # pool the last conv's signed output directly
    layer = net.features[-2]
    target = [0, 1, 2]
    cameras = CAMERAS(net, layer).attribute(x, target=target, scales=(1,), relu_attributions=False)
    grad_cam = LayerGradCam(net, layer).attribute(x, target=target)
    grad_cam = LayerAttribution.interpolate(grad_cam, (32, 32), "bilinear")
    grad_cam = grad_cam / grad_cam.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(cameras, grad_cam, atol=1e-5, rtol=1e-4)
    assert cameras.min() < 0  # the signed map is kept without the ReLU


def reference_cameras(net, layer, x, target, scales):
    """The formula, one image at a time, from Captum's own activation/gradient helper."""
    out = []
    for i in range(x.shape[0]):
        acts, grads = [], []
        for s in scales:
            size = (round(32 * s), round(32 * s))
            shown = F.interpolate(x[i : i + 1], size=size, mode="bicubic", align_corners=False)
            (grad,), (act,) = compute_layer_gradients_and_eval(net, layer, shown, int(target[i]))
            acts.append(F.interpolate(act, (32, 32), mode="bilinear", align_corners=False))
            grads.append(F.interpolate(grad, (32, 32), mode="bilinear", align_corners=False))
        out.append((torch.stack(acts).mean(0) * torch.stack(grads).mean(0)).sum(1, keepdim=True))
    return torch.cat(out)


@pytest.mark.parametrize("channel_chunk, internal_batch_size", [(None, None), (5, 2)])
@pytest.mark.parametrize("layer_index", [1, -1])  # finer and coarser than the input
def test_matches_the_formula_image_by_image(
    smooth, data, layer_index, channel_chunk, internal_batch_size
):
    images, labels, _ = data
    x, target = images[:3], labels[:3]
    layer = smooth.features[layer_index]
    scales = (1, 0.5, 1.5, 2.25)
    expected = reference_cameras(smooth, layer, x, target, scales)
    maps = CAMERAS(smooth, layer).attribute(
        x,
        target=target,
        scales=scales,
        relu_attributions=False,
        normalise=False,
        channel_chunk=channel_chunk,
        internal_batch_size=internal_batch_size,
    )
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-4)
    assert expected.abs().max() > 0


def test_internal_batch_size_bounds_every_pass(smooth, data, recording):
    images, labels, _ = data
    wrapped = recording(smooth)
    CAMERAS(wrapped, smooth.features[-1]).attribute(
        images[:5], target=labels[:5], scales=(1, 2), internal_batch_size=2
    )
    assert wrapped.largest == 2


def test_maps_depend_on_the_target_and_target_forms_agree(model, data):
    images, labels, _ = data
    x = images[:4]
    cameras = CAMERAS(model, layer_of(model))
    by_int = [cameras.attribute(x, target=k, scales=(1, 2)) for k in range(3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (by_int[a] - by_int[b]).abs().amax() > 0.3
    target = torch.tensor([0, 2, 1, 0])
    as_tensor = cameras.attribute(x, target=target, scales=(1, 2))
    as_list = cameras.attribute(x, target=target.tolist(), scales=(1, 2))
    torch.testing.assert_close(as_tensor, as_list)
    for i, k in enumerate(target.tolist()):
        torch.testing.assert_close(as_tensor[i], by_int[k][i], atol=1e-6, rtol=1e-5)


def median_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rhos = [spearmanr(u.flatten().numpy(), v.flatten().numpy())[0] for u, v in zip(a, b)]
    return float(torch.tensor(rhos).nan_to_num(0.0).median())


def test_sanity_check_randomising_the_top_layers_changes_the_map(model, data):
    # Adebayo et al. (2018): a map that survives randomising the weights explains nothing.
    images, labels, _ = data
    x, target = images[:16], labels[:16]
    trained = CAMERAS(model, layer_of(model)).attribute(x, target=target)
    randomised, perturbed = copy.deepcopy(model), copy.deepcopy(model)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1)
        randomised.head.reset_parameters()
        randomised.features[-2].reset_parameters()
        for param in perturbed.parameters():
            param.mul_(1 + 0.05 * torch.randn_like(param))
    random_maps = CAMERAS(randomised, layer_of(randomised)).attribute(x, target=target)
    assert median_spearman(trained, random_maps) < 0.5
    # The measure itself is not always low: weights perturbed by 5% give nearly the same maps.
    close = CAMERAS(perturbed, layer_of(perturbed)).attribute(x, target=target)
    assert median_spearman(trained, close) > 0.8


def test_finer_than_grad_cam_on_small_objects(model, data):
    images, labels, masks = data
    layer = layer_of(model)
    cameras = CAMERAS(model, layer).attribute(images, target=labels)
    grad_cam = LayerGradCam(model, layer).attribute(images, target=labels, relu_attributions=True)
    grad_cam = LayerAttribution.interpolate(grad_cam, (32, 32), "bilinear")
    energy_cameras = energy_pointing_game(cameras, masks).mean()
    energy_grad_cam = energy_pointing_game(grad_cam, masks).mean()
    assert energy_cameras > energy_grad_cam + 0.1
    hits_cameras = pointing_game(cameras, masks, tolerance=2).float().mean()
    hits_grad_cam = pointing_game(grad_cam, masks, tolerance=2).float().mean()
    assert hits_cameras > hits_grad_cam


def test_batch_invariance(smooth, data):
    # (With max pooling, float rounding that differs between batch sizes can flip an argmax
    # and move a gradient; the smooth model shows that CAMERAS itself mixes no images.)
    images, labels, _ = data
    cameras = CAMERAS(smooth, layer_of(smooth))
    batch = cameras.attribute(images[:5], target=labels[:5])
    alone = cameras.attribute(images[3:4], target=labels[3:4])
    torch.testing.assert_close(batch[3:4], alone, atol=1e-5, rtol=1e-4)


def test_works_for_no_grad_and_inference_mode_callers(model, data):
    images, labels, _ = data
    x, target = images[:2], labels[:2]
    cameras = CAMERAS(model, layer_of(model))
    expected = cameras.attribute(x, target=target, scales=(1, 2))
    with torch.no_grad():
        under_no_grad = cameras.attribute(x, target=target, scales=(1, 2))
    with torch.inference_mode():
        frozen = x.clone()
        under_inference = cameras.attribute(frozen, target=target, scales=(1, 2))
    torch.testing.assert_close(under_no_grad, expected)
    torch.testing.assert_close(under_inference, expected)


class ShiftedInput(nn.Module):
    """``net(x + shift)`` with a per-image shift ``(N, 3, 1, 1)`` as an extra argument."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, shift):
        return self.net(x + shift)


def test_additional_forward_args_follow_their_inputs(smooth, data):
    images, labels, _ = data
    model = smooth
    wrapped = ShiftedInput(model)
    x, target = images[:3], labels[:3]
    shift = torch.linspace(-0.3, 0.3, 3).view(3, 1, 1, 1).expand(3, 3, 1, 1).contiguous()
    cameras = CAMERAS(wrapped, layer_of(model))
    together = cameras.attribute(
        x, target=target, additional_forward_args=(shift,), scales=(1, 2), internal_batch_size=2
    )
    for i in range(3):
        alone = cameras.attribute(
            x[i : i + 1],
            target=target[i : i + 1],
            additional_forward_args=shift[i : i + 1],
            scales=(1, 2),
        )
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)
    unshifted = CAMERAS(model, layer_of(model)).attribute(x, target=target, scales=(1, 2))
    assert (together[0] - unshifted[0]).abs().amax() > 0.05


def test_layer_input_is_the_previous_layer_output(model, data):
    images, labels, _ = data
    x, target = images[:3], labels[:3]
    relu_input = CAMERAS(model, model.features[-1]).attribute(
        x, target=target, scales=(1, 2), attribute_to_layer_input=True
    )
    conv_output = CAMERAS(model, model.features[-2]).attribute(x, target=target, scales=(1, 2))
    torch.testing.assert_close(relu_input, conv_output)


def snapshot(net: nn.Module):
    return (
        [m.training for m in net.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in net.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()],
        [b.clone() for b in net.buffers()],
    )


class NormedCNN(nn.Module):
    """BatchNorm in front of the CNN; optionally fails on inputs larger than 40 pixels."""

    def __init__(self, inner: nn.Module, fail_above: int | None = None) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.inner = inner
        self.fail_above = fail_above

    def forward(self, x):
        if self.fail_above is not None and x.shape[-1] > self.fail_above:
            raise RuntimeError("input too large")
        return self.inner(self.norm(x))


@pytest.mark.parametrize("fails", [False, True])
def test_model_state_is_restored_even_on_error(model, data, fails):
    images, labels, _ = data
    net = NormedCNN(copy.deepcopy(model), fail_above=40 if fails else None)
    net.train()  # BatchNorm updates its running statistics on every forward pass
    net.inner.features[0].eval()
    net.inner.head.requires_grad_(True)
    net.inner.head.weight.grad = torch.full_like(net.inner.head.weight, 2.0)
    net.inner.features[3].register_forward_hook(lambda *a: None)
    x = images[:2].clone().requires_grad_(True)
    before = snapshot(net)
    cameras = CAMERAS(net, net.inner.features[-1])
    if fails:
        with pytest.raises(RuntimeError, match="input too large"):
            cameras.attribute(x, target=labels[:2], scales=(1, 2))
    else:
        maps = cameras.attribute(x, target=labels[:2], scales=(1, 2))
        assert torch.isfinite(maps).all()
    after = snapshot(net)
    assert before[0] == after[0]
    for (rg_a, g_a), (rg_b, g_b) in zip(before[1], after[1]):
        assert rg_a == rg_b
        assert (g_a is None) == (g_b is None) and (g_a is None or torch.equal(g_a, g_b))
    assert before[2] == after[2]
    assert all(torch.equal(a, b) for a, b in zip(before[3], after[3]))
    assert x.requires_grad and x.grad is None


def test_works_as_a_borex_prior(model, data):
    images, labels, _ = data
    x, target = images[:2], labels[:2]
    cameras = CAMERAS(model, layer_of(model))
    details = BOREx(model, prior=cameras).attribute(
        x, target=target, n_iter=4, seed=0, return_details=True
    )
    assert details.attributions.shape == x.shape
    assert torch.isfinite(details.attributions).all()
    expected_prior = normalise_prior(cameras.attribute(x, target=target)[:, 0], 0.1)
    torch.testing.assert_close(details.prior, expected_prior)
    coarse = BOREx(model, prior=cameras).attribute(
        x, target=target, n_iter=1, seed=0, return_details=True, prior_kwargs={"scales": (1,)}
    )
    expected_coarse = normalise_prior(cameras.attribute(x, target=target, scales=(1,))[:, 0], 0.1)
    torch.testing.assert_close(coarse.prior, expected_coarse)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)).mean((-2, -1)))


def test_bad_layers_raise_clear_errors(model, data):
    images, labels, _ = data
    with pytest.raises(TypeError, match="layer must be a torch.nn.Module"):
        CAMERAS(model, [layer_of(model)])
    with pytest.raises(ValueError, match="layer Conv2d is not a submodule"):
        CAMERAS(model, nn.Conv2d(3, 3, 3))
    with pytest.raises(TypeError, match="forward_func must be callable"):
        CAMERAS(3, layer_of(model))
    # A closure over the model is seen through; a function that hides the model (here
    # behind a weak reference) has its layer checked when the model runs.
    with pytest.raises(ValueError, match="layer Conv2d is not a submodule"):
        CAMERAS(lambda x: model(x), nn.Conv2d(3, 3, 3))
    hidden = weakref.ref(model)
    stranger = CAMERAS(lambda x: hidden()(x), nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="layer must run exactly once.*ran 0 times"):
        stranger.attribute(images[:2], target=0, scales=(1,))
    twice = Twice()
    with pytest.raises(ValueError, match="ran 2 times"):
        CAMERAS(twice, twice.conv).attribute(images[:2], target=0, scales=(1,))
    with pytest.raises(ValueError, match=r"\(N, channels, h, w\)"):
        CAMERAS(model, model.head).attribute(images[:2], target=0, scales=(1,))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"scales": ()}, ValueError, "scales must hold at least one"),
        ({"scales": (1, -2)}, ValueError, "scales must hold positive finite numbers, got -2"),
        ({"scales": (0,)}, ValueError, "scales must hold positive"),
        ({"scales": (float("nan"),)}, ValueError, "scales must hold positive"),
        ({"scales": (1, "2")}, TypeError, "scales must hold numbers"),
        ({"scales": (1, True)}, TypeError, "scales must hold numbers"),
        ({"scales": 2.0}, TypeError, "scales must be a sequence"),
        ({"scales": "12"}, TypeError, "scales must be a sequence"),
        ({"channel_chunk": 0}, ValueError, "channel_chunk must be >= 1"),
        ({"internal_batch_size": 1.5}, TypeError, "internal_batch_size must be an int"),
        ({"target": 7}, ValueError, "target 7 is out of range"),
    ],
)
def test_bad_arguments_raise_clear_errors(model, data, kwargs, error, message):
    images, labels, _ = data
    kwargs = {"target": labels[:2], **kwargs}
    with pytest.raises(error, match=message):
        CAMERAS(model, layer_of(model)).attribute(images[:2], **kwargs)


def test_bad_inputs_raise_clear_errors(model):
    cameras = CAMERAS(model, layer_of(model))
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\) images"):
        cameras.attribute(torch.rand(1, 3, 4, 32, 32), target=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        cameras.attribute(torch.full((1, 3, 32, 32), float("nan")), target=0)
