"""The attributions, measures and callback on a CUDA device (skipped without one).

CI has no GPU: these run where one is lent. On CUDA, convolutions may use TF32 and reduce in
another order, so a window can win a near tie on one device and lose it on the other; the
comparisons with the CPU therefore allow small differences in the maps.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from captum.attr import LayerGradCam

from captum_borex import CAMERAS, RISE, BOREx
from captum_borex.metrics import deletion_auc, insertion_auc, refinement_report

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture
def cuda_cnn(cnn):
    """A copy of the trained CNN on the GPU (the session's model stays on the CPU)."""
    return copy.deepcopy(cnn).to(CUDA)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps, ``(N,)``."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_borex_on_cuda_agrees_with_cpu(cnn, cuda_cnn, shapes_val):
    images, labels, _ = shapes_val
    images, labels = images[:16], labels[:16]
    kwargs = dict(target=labels, n_iter=10, seed=0)
    cpu = BOREx(cnn, prior=LayerGradCam(cnn, cnn.features[-1])).attribute(images, **kwargs)
    gpu_inputs = images.to(CUDA)
    details = BOREx(cuda_cnn, prior=LayerGradCam(cuda_cnn, cuda_cnn.features[-1])).attribute(
        gpu_inputs, target=labels.to(CUDA), n_iter=10, seed=0, return_details=True
    )
    gpu = details.attributions
    assert gpu.device.type == "cuda" and gpu.shape == images.shape
    assert details.uncertainty.device.type == "cuda"
    assert torch.equal(gpu_inputs.cpu(), images), "inputs changed"
    assert next(cuda_cnn.parameters()).device.type == "cuda"
    assert correlation(cpu, gpu.cpu()).median() > 0.99
    cpu_deletion = deletion_auc(cnn, images, cpu, target=labels)
    gpu_deletion = deletion_auc(cuda_cnn, gpu_inputs, gpu, target=labels.to(CUDA))
    assert gpu_deletion.device.type == "cuda"
    assert (cpu_deletion.mean() - gpu_deletion.cpu().mean()).abs() < 0.02


def test_video_borex_on_cuda(cnn3d, clips_val):
    clips, labels, _ = clips_val
    model = copy.deepcopy(cnn3d).to(CUDA)
    maps = BOREx(model).attribute(clips[:4].to(CUDA), target=labels[:4].to(CUDA), n_iter=6)
    assert maps.device.type == "cuda" and maps.shape == clips[:4].shape
    assert torch.isfinite(maps).all()


def test_rise_and_cameras_on_cuda_agree_with_cpu(cnn, cuda_cnn, shapes_val):
    images, labels, _ = shapes_val
    images, labels = images[:8], labels[:8]
    rise_cpu = RISE(cnn).attribute(images, target=labels, n_masks=64, seed=0)
    rise_gpu = RISE(cuda_cnn).attribute(images.to(CUDA), target=labels.to(CUDA), n_masks=64, seed=0)
    assert rise_gpu.device.type == "cuda"
    assert correlation(rise_cpu, rise_gpu.cpu()).min() > 0.999
    cameras_cpu = CAMERAS(cnn, cnn.features[-1]).attribute(images, target=labels)
    cameras_gpu = CAMERAS(cuda_cnn, cuda_cnn.features[-1]).attribute(
        images.to(CUDA), target=labels.to(CUDA)
    )
    assert cameras_gpu.device.type == "cuda"
    assert correlation(cameras_cpu, cameras_gpu.cpu()).min() > 0.999


def test_measures_and_report_on_cuda_agree_with_cpu(cnn, cuda_cnn, shapes_val):
    images, labels, masks = shapes_val
    images, labels, masks = images[:16], labels[:16], masks[:16]
    maps = RISE(cnn).attribute(images, target=labels, n_masks=32, seed=0)
    for measure in (deletion_auc, insertion_auc):
        cpu = measure(cnn, images, maps, target=labels)
        gpu = measure(cuda_cnn, images.to(CUDA), maps.to(CUDA), target=labels.to(CUDA))
        assert torch.allclose(cpu, gpu.cpu(), atol=5e-3), measure.__name__
    report = refinement_report(
        cuda_cnn,
        LayerGradCam(cuda_cnn, cuda_cnn.features[-1]),
        images.to(CUDA),
        labels.to(CUDA),
        masks=masks.to(CUDA),
        n_iter=8,
        seed=0,
    )
    numbers = report.to_dict()
    assert set(numbers) >= {"deletion", "insertion", "pointing_game"}
    assert 0.0 <= numbers["deletion"]["refined"] <= 1.0


def test_callback_on_cuda(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from ddp_predict import BOREX_SETTINGS, ShapesModule, gradcam, shapes_loader
    from test_lightning import make_trainer

    from captum_borex.lightning import BORExCallback

    callback = BORExCallback(prior=gradcam, num_samples=4, metric_steps=8, **BOREX_SETTINGS)
    trainer = make_trainer(tmp_path, [callback], accelerator="gpu", max_epochs=1)
    (validated,) = trainer.validate(ShapesModule(), shapes_loader(16, seed=1))
    assert 0.0 <= validated["borex/deletion_auc_refined"] <= 1.0
    assert callback.last_explanation.attributions.device.type == "cpu"
    assert all(m.device.type == "cpu" for m in callback.last_explanation.evidence_maps.values())
    assert callback.last_explanation.prior.abs().sum() > 0
