"""Shared fixtures: a small CNN trained once per session on synthetic shapes."""

from __future__ import annotations

import pytest
import torch

from captum_borex.synthetic import (
    SmallCNN,
    SmallCNN3d,
    make_clips,
    make_shapes,
    train_classifier,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shapes_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out synthetic images, labels and object masks."""
    return make_shapes(64, seed=1)


@pytest.fixture(scope="session")
def trained_cnn() -> SmallCNN:
    """A SmallCNN trained on 1500 synthetic images (100% validation accuracy)."""
    images, labels, _ = make_shapes(1500, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN(width=16)
    model = train_classifier(model, images, labels, epochs=6, seed=0)
    model.requires_grad_(False)
    return model


@pytest.fixture
def cnn(trained_cnn: SmallCNN) -> SmallCNN:
    """The trained CNN, guaranteed in eval mode with gradients enabled for this test."""
    trained_cnn.eval()
    trained_cnn.requires_grad_(True)
    yield trained_cnn
    trained_cnn.requires_grad_(False)


CLIP_KW = dict(size=24, object_size=6)


@pytest.fixture(scope="session")
def clips_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out synthetic clips (N, 3, 8, 24, 24), labels and spatio-temporal masks."""
    return make_clips(16, seed=7, **CLIP_KW)


@pytest.fixture(scope="session")
def trained_cnn3d() -> SmallCNN3d:
    """A SmallCNN3d trained on 400 synthetic clips (the object shows in 3 of 8 frames)."""
    clips, labels, _ = make_clips(400, seed=0, **CLIP_KW)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN3d(width=8)
    model = train_classifier(model, clips, labels, epochs=6, batch_size=32, seed=0)
    model.requires_grad_(False)
    return model


@pytest.fixture
def cnn3d(trained_cnn3d: SmallCNN3d) -> SmallCNN3d:
    """The trained clip model, in eval mode with gradients enabled for this test."""
    trained_cnn3d.eval()
    trained_cnn3d.requires_grad_(True)
    yield trained_cnn3d
    trained_cnn3d.requires_grad_(False)
