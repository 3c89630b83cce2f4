"""Shared fixtures: a small CNN trained once per session on synthetic shapes."""

from __future__ import annotations

import pytest
import torch

from captum_borex.synthetic import SmallCNN, make_shapes, train_classifier

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shapes_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out synthetic images, labels and object masks."""
    return make_shapes(64, seed=1)


@pytest.fixture(scope="session")
def trained_cnn() -> SmallCNN:
    """A SmallCNN trained on 1500 synthetic images (100% validation accuracy)."""
    images, labels, _ = make_shapes(1500, seed=0)
    model = train_classifier(SmallCNN(width=16), images, labels, epochs=6, seed=0)
    model.requires_grad_(False)
    return model


@pytest.fixture
def cnn(trained_cnn: SmallCNN) -> SmallCNN:
    """The trained CNN, guaranteed in eval mode with gradients enabled for this test."""
    trained_cnn.eval()
    trained_cnn.requires_grad_(True)
    yield trained_cnn
    trained_cnn.requires_grad_(False)
