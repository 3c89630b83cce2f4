"""Shared fixtures: a small CNN trained once per session on synthetic shapes."""

from __future__ import annotations

import os

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


class Recording(torch.nn.Module):
    """Wraps a model and records the inputs it sees: how many, and the largest batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seen, self.largest = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        self.largest = max(self.largest, x.shape[0])
        return self.model(x)


@pytest.fixture
def recording() -> type[Recording]:
    """:class:`Recording`, to wrap a model in a test."""
    return Recording


@pytest.fixture(scope="session")
def shapes_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out synthetic images, labels and object masks."""
    return make_shapes(64, seed=1)


def _trained(model_class: type, data: tuple, **train_kwargs: object) -> torch.nn.Module:
    """A model built from a fixed seed, trained, frozen (the global RNG is left alone)."""
    inputs, labels, _ = data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_class(width=train_kwargs.pop("width"))
    model = train_classifier(model, inputs, labels, seed=0, **train_kwargs)
    model.requires_grad_(False)
    return model


def _usable(model: torch.nn.Module):
    """The model in eval mode with gradients enabled for one test, frozen again after."""
    model.eval()
    model.requires_grad_(True)
    yield model
    model.requires_grad_(False)


@pytest.fixture(scope="session")
def trained_cnn() -> SmallCNN:
    """A SmallCNN trained on 1500 synthetic images (100% validation accuracy)."""
    return _trained(SmallCNN, make_shapes(1500, seed=0), width=16, epochs=6)


@pytest.fixture
def cnn(trained_cnn: SmallCNN) -> SmallCNN:
    """The trained CNN, in eval mode with gradients enabled for this test."""
    yield from _usable(trained_cnn)


CLIP_KW = dict(size=24, object_size=6)


@pytest.fixture(scope="session")
def clips_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out synthetic clips (N, 3, 8, 24, 24), labels and spatio-temporal masks."""
    return make_clips(16, seed=7, **CLIP_KW)


@pytest.fixture(scope="session")
def trained_cnn3d() -> SmallCNN3d:
    """A SmallCNN3d trained on 400 synthetic clips (the object shows in 3 of 8 frames)."""
    data = make_clips(400, seed=0, **CLIP_KW)
    return _trained(SmallCNN3d, data, width=8, epochs=6, batch_size=32)


@pytest.fixture
def cnn3d(trained_cnn3d: SmallCNN3d) -> SmallCNN3d:
    """The trained clip model, in eval mode with gradients enabled for this test."""
    yield from _usable(trained_cnn3d)


# Property-based fuzz (tests/test_fuzz.py): "ci" keeps the suite's time budget (about 150
# examples a test, reproducible); HYPOTHESIS_PROFILE=thorough runs many more by hand.
try:
    from hypothesis import settings as hypothesis_settings
except ImportError:  # the fuzz is skipped without it (pip install captum-borex[test])
    hypothesis_settings = None
if hypothesis_settings is not None:
    hypothesis_settings.register_profile(
        "ci", max_examples=150, deadline=None, derandomize=True, print_blob=True
    )
    hypothesis_settings.register_profile("thorough", max_examples=2000, deadline=None)
    hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
