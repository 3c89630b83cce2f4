"""BORExCallback: a fixed set of distinct samples, and bad data found before training."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_borex.lightning._compat import pl

sys.path.insert(0, str(Path(__file__).parent))
from ddp_predict import ShapesModule, shapes_loader  # noqa: E402
from test_lightning import make_trainer, small_callback  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


class Counting(ShapesModule):
    """Counts training steps, to see that a check came before any."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)


def fit_with(tmp_path: Path, callback, val_loader, **trainer_kwargs) -> Counting:
    pl.seed_everything(0, verbose=False)
    module = Counting()
    trainer = make_trainer(tmp_path, [callback], **trainer_kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers).*")
        trainer.fit(module, shapes_loader(24, seed=0), val_loader)
    return module


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fewer_validation_samples_than_num_samples_are_tracked_once_for_good(
    tmp_path: Path,
) -> None:
    callback = small_callback(num_samples=8, log_metrics=False, save_png=False)
    tracked = []

    class Spy(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                tracked.append(callback.state_dict()["inputs"].clone())

    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path, [callback, Spy()], max_epochs=3)
    trainer.fit(Counting(), shapes_loader(24, seed=0), shapes_loader(3, seed=1, shuffle=True))
    images = next(iter(shapes_loader(3, seed=1, batch_size=3)))[0]
    assert len(tracked) == 3
    for inputs in tracked:
        assert inputs.shape == (3, 3, 32, 32)  # each sample once, not [0, 1, 2, 0, 1, 2, ...]
        assert torch.equal(inputs, tracked[0])  # the first epoch's set, kept
    assert {tuple(x.flatten()[:8].tolist()) for x in tracked[0]} == {
        tuple(x.flatten()[:8].tolist()) for x in images
    }
    assert callback.last_explanation.attributions.shape[0] == 3


def dict_loader() -> DataLoader:
    images = next(iter(shapes_loader(8, seed=1, batch_size=8)))[0]
    return DataLoader([{"image": image} for image in images], batch_size=4)


def nan_loader() -> DataLoader:
    images, labels = next(iter(shapes_loader(8, seed=1, batch_size=8)))
    images = images.clone()
    images[5, 0, 3, 3] = float("nan")
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def failing_prior(module):
    raise RuntimeError("this prior is broken")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("loader", "kwargs", "error", "match"),
    [
        (dict_loader, {}, TypeError, "pass batch_to_inputs"),
        (
            nan_loader,
            {},
            ValueError,
            r"validation inputs contains NaN or Inf values \(inputs \[5\]",
        ),
        (None, {"window_sizes": (40,)}, ValueError, "window_sizes"),
        (None, {"prior": lambda m: failing_prior(m)}, ValueError, "this prior is broken"),
        (None, {"prior": lambda m: 3}, TypeError, "prior must be a Captum attribution"),
    ],
)
def test_bad_validation_data_or_settings_raise_before_training(
    tmp_path: Path, loader, kwargs: dict, error: type, match: str
) -> None:
    callback = small_callback(log_metrics=False, save_png=False, **kwargs)
    module = Counting()
    trainer = make_trainer(tmp_path, [callback], num_sanity_val_steps=0)
    val = loader() if loader is not None else shapes_loader(8, seed=1)
    with pytest.raises(error, match=match):
        trainer.fit(module, shapes_loader(24, seed=0), val)
    assert module.steps == 0


def test_an_empty_validation_set_warns_once(tmp_path: Path) -> None:
    callback = small_callback(log_metrics=False, save_png=False)
    empty = DataLoader(TensorDataset(torch.rand(0, 3, 32, 32), torch.zeros(0).long()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = fit_with(tmp_path, callback, empty, max_epochs=2)
    ours = [w for w in caught if "BORExCallback: no validation samples" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert module.steps > 0  # training itself goes on
