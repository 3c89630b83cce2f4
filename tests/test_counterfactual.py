"""RegionCounterfactual: region picking, the pixel stage, the latent stage and measures."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam

from captum_borex import RISE
from captum_borex.counterfactual import (
    LatentDiffusionGenerator,
    RegionCounterfactual,
    distances,
    flip_rate,
    knn_realism,
    region_change,
    select_region,
)
from captum_borex.synthetic import SmallCNN3d, make_shapes

N = 16


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, masks = make_shapes(N, seed=1)
    return images, labels, (labels + 1) % 3


def _gradcam(model: torch.nn.Module) -> LayerGradCam:
    return LayerGradCam(model, model.features[-1])


def _random_maps(n: int = N) -> torch.Tensor:
    return torch.rand(n, 32, 32, generator=torch.Generator().manual_seed(0))


def test_gradcam_region_flips_and_nothing_outside_changes(cnn, data) -> None:
    images, labels, target = data
    result = RegionCounterfactual(cnn, _gradcam(cnn)).generate(
        images, target, region=0.1, bounds=(0, 1)
    )
    assert result.flipped.float().mean() >= 0.9
    assert torch.equal(result.flipped, cnn(result.counterfactuals).argmax(1) == target)
    assert result.counterfactuals.shape == images.shape
    assert result.region.shape == (N, 1, 32, 32) and result.region.dtype == torch.bool
    assert (result.region.sum((1, 2, 3)) == round(0.1 * 32 * 32)).all()
    outside = ~result.region.expand_as(images)
    assert torch.equal(result.counterfactuals[outside], images[outside])
    assert result.counterfactuals.min() >= 0 and result.counterfactuals.max() <= 1
    assert torch.equal(result.original, labels) and torch.equal(result.target, target)
    l1, l2 = distances(images, result.counterfactuals)
    assert torch.allclose(result.l1, l1) and torch.allclose(result.l2, l2)
    assert (result.l2 > 0).all() and (result.steps >= 1).all()
    flipped = result.target_probability[result.flipped]
    assert (flipped >= 0.5).all()


def test_salient_region_needs_a_smaller_change_than_random(cnn, data) -> None:
    images, _, target = data
    options = dict(region=0.1, bounds=(0, 1), n_iter=150)
    salient = RegionCounterfactual(cnn, _gradcam(cnn)).generate(images, target, **options)
    random = RegionCounterfactual(cnn, _random_maps()).generate(images, target, **options)
    assert salient.flipped.float().mean() > random.flipped.float().mean()
    assert salient.l2.mean() < random.l2.mean()
    assert salient.steps.float().mean() < random.steps.float().mean()


def test_region_is_one_compact_blob_at_the_maps_top() -> None:
    maps = torch.zeros(2, 16, 16)
    maps[0, 2:5, 10:13] = 1.0
    region = select_region(maps, 0.1)[:, 0]
    assert (region.sum((1, 2)) == round(0.1 * 256)).all()
    assert region[0, 2:5, 10:13].all()
    rows, cols = region[0].nonzero().unbind(1)
    assert rows.max() - rows.min() <= 6 and cols.max() - cols.min() <= 6
    rows, cols = region[1].nonzero().unbind(1)  # a flat map gives a disc at the centre
    assert abs(rows.float().mean() - 7.5) < 1 and abs(cols.float().mean() - 7.5) < 1


def test_saliency_forms_and_seed(cnn, data) -> None:
    images, labels, target = data
    images, labels, target = images[:4], labels[:4], target[:4]
    layer_maps = _gradcam(cnn).attribute(images, target=labels)  # (N, 1, 16, 16)
    by_method = RegionCounterfactual(cnn, _gradcam(cnn)).generate(images, target.tolist())
    by_tensor = RegionCounterfactual(cnn, layer_maps).generate(images, target)
    by_callable = RegionCounterfactual(
        cnn, lambda x, t: _gradcam(cnn).attribute(x, target=t)
    ).generate((images,), target)
    assert torch.equal(by_method.region, by_tensor.region)
    assert torch.equal(by_method.region, by_callable.region)
    rise = RegionCounterfactual(cnn, RISE(cnn))
    kwargs = dict(saliency_kwargs={"n_masks": 64}, seed=3)
    state = torch.get_rng_state()
    first, second = rise.generate(images, target, **kwargs), rise.generate(images, target, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.counterfactuals, second.counterfactuals)
    assert torch.equal(first.region, second.region)


def test_model_hooks_and_rng_untouched(cnn, data) -> None:
    images, _, target = data
    images = images[:4].clone().requires_grad_(False)
    handle = cnn.register_forward_hook(lambda *args: None)
    params = [p.detach().clone() for p in cnn.parameters()]
    flags = [p.requires_grad for p in cnn.parameters()]
    hooks = len(cnn._forward_hooks) + len(cnn.features[-1]._forward_hooks)
    cnn.train()
    state = torch.get_rng_state()
    RegionCounterfactual(cnn, _gradcam(cnn)).generate(images, target[:4], n_iter=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert cnn.training
    assert hooks == len(cnn._forward_hooks) + len(cnn.features[-1]._forward_hooks)
    assert all(torch.equal(p, q) for p, q in zip(params, cnn.parameters()))
    assert flags == [p.requires_grad for p in cnn.parameters()]
    assert all(p.grad is None for p in cnn.parameters())
    assert not images.requires_grad and images.grad is None
    handle.remove()
    cnn.eval()


def test_clips_change_only_their_region() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN3d(width=4).eval()
        clips = torch.rand(2, 3, 4, 12, 12)
    target = (model(clips).argmax(1) + 1) % 3
    result = RegionCounterfactual(model, torch.rand(2, 4, 12, 12)).generate(
        clips, target, region=0.2, n_iter=20
    )
    assert result.region.shape == (2, 1, 4, 12, 12)
    assert (result.region.sum((1, 2, 3, 4)) == round(0.2 * 4 * 12 * 12)).all()
    outside = ~result.region.expand_as(clips)
    assert torch.equal(result.counterfactuals[outside], clips[outside])
    assert (result.l1 > 0).all()


def _tiny_diffusers_parts():
    diffusers = pytest.importorskip("diffusers")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        blocks = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
        vae = diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            **blocks,
        )
        unet = diffusers.UNet2DModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D",) * 2,
            up_block_types=("UpBlock2D",) * 2,
            **blocks,
        )
    return diffusers, vae, unet


@pytest.mark.parametrize("scheduler_name", ["DDIMScheduler", "EulerDiscreteScheduler"])
def test_latent_stage_changes_the_region_far_more_than_outside(cnn, data, scheduler_name) -> None:
    diffusers, vae, unet = _tiny_diffusers_parts()
    scheduler = getattr(diffusers, scheduler_name)(num_train_timesteps=100)
    images, _, target = data
    images, target = images[:6], target[:6]
    vae.train()
    unet.eval()
    generator = LatentDiffusionGenerator(vae, unet, scheduler, strength=0.5, n_steps=8)
    explainer = RegionCounterfactual(cnn, _gradcam(cnn), generator)
    result = explainer.generate(images, target, bounds=(0, 1), n_iter=50, seed=0)
    inside, outside = region_change(images, result.counterfactuals, result.region)
    assert result.latent_steps == 4
    assert (outside < 0.1 * inside).all()
    far = torch.nn.functional.max_pool2d(result.region.float(), 5, 1, 2) == 0
    far = far.expand_as(images)
    assert torch.equal(result.counterfactuals[far], images[far])  # beyond the feather
    assert vae.training and not unet.training
    assert all(p.grad is None for p in list(vae.parameters()) + list(unet.parameters()))
    again = explainer.generate(images, target, bounds=(0, 1), n_iter=50, seed=0)
    assert torch.equal(again.counterfactuals, result.counterfactuals)


def test_bad_arguments_raise(cnn, data) -> None:
    images, labels, target = data
    images, labels, target = images[:2], labels[:2], target[:2]
    for saliency in ("gradcam", object(), 3):
        with pytest.raises(TypeError, match="saliency"):
            RegionCounterfactual(cnn, saliency)
    with pytest.raises(TypeError, match="generator"):
        RegionCounterfactual(cnn, _gradcam(cnn), generator=object())
    explainer = RegionCounterfactual(cnn, _gradcam(cnn))
    for region in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="region"):
            explainer.generate(images, target, region=region)
    with pytest.raises(ValueError, match="target equals the original"):
        explainer.generate(images, labels)
    with pytest.raises(ValueError, match="target 5 is out of range"):
        explainer.generate(images, 5)
    with pytest.raises(ValueError, match="original"):
        explainer.generate(images, target, original=[0, 9])
    with pytest.raises(TypeError, match="target"):
        explainer.generate(images, None)
    with pytest.raises(ValueError, match="confidence"):
        explainer.generate(images, target, confidence=1.0)
    with pytest.raises(ValueError, match="keep"):
        explainer.generate(images, target, keep=0)
    with pytest.raises(ValueError, match="bounds"):
        explainer.generate(images, target, bounds=(1, 0))
    with pytest.raises(ValueError, match="saliency|prior"):
        RegionCounterfactual(cnn, torch.rand(3, 7, 7)).generate(images, target)
    with pytest.raises(TypeError, match="vae"):
        LatentDiffusionGenerator(object(), torch.nn.Identity(), object())


def test_measures(cnn, data) -> None:
    images, labels, target = data
    reference, _, _ = make_shapes(40, seed=5)
    real = knn_realism(images, reference).mean()
    noisy = knn_realism((images + 0.3 * torch.randn_like(images)).clamp(0, 1), reference).mean()
    assert 0.8 < real < 1.25 and noisy > 1.2 * real
    assert flip_rate(cnn, images, labels) == 1.0
    region = torch.zeros(N, 1, 32, 32, dtype=torch.bool)
    region[:, :, :8] = True
    changed = images + 0.5 * region
    inside, outside = region_change(images, changed, region)
    assert torch.allclose(inside, torch.full((N,), 0.5)) and (outside == 0).all()
