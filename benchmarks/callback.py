"""Cost of BORExCallback per validation epoch, against the epoch's own validation time.

    python benchmarks/callback.py            # full run (a few minutes on 2 cores)
    python benchmarks/callback.py --quick    # smaller data, two settings: a smoke run

Trains a SmallCNN (width 32) on 64x64 synthetic shapes with a TensorBoard logger, once per
callback setting, and measures in the same run, for the last epoch: the validation loop
itself (every validation batch, including the callback's sample collection) and the
callback's work at validation epoch end (BOREx over a Grad-CAM prior for the tracked
samples, deletion / insertion AUC of prior and refined maps, the figure and its logging).
It also counts the images each phase passes through the model, a measure that does not
depend on the machine: the callback's cost is a fixed number of forward passes, so its share
shrinks as the validation set grows.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from typing import Any

import torch
from captum.attr import LayerGradCam
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from captum_borex.lightning import BORExCallback
from captum_borex.lightning._compat import pl
from captum_borex.synthetic import SmallCNN, make_shapes


class Shapes(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = SmallCNN(width=32)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


class Meter:
    """Wall time and images through the model, per phase of the validation epoch."""

    def __init__(self) -> None:
        self.phase = "train"
        self.started = 0.0
        self.seconds: dict[str, float] = {}
        self.images: dict[str, int] = {}

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self.phase in ("validation", "callback"):
            self.seconds[self.phase] = now - self.started
        self.phase, self.started = phase, now
        if phase in ("validation", "callback"):
            self.images[phase] = 0

    def count(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if self.phase in self.images:
            self.images[self.phase] += args[0].shape[0]


class Mark(pl.Callback):
    """Switches the meter's phase; one instance before BORExCallback, one after it."""

    def __init__(self, meter: Meter, before: bool) -> None:
        self.meter, self.before = meter, before

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.before and not trainer.sanity_checking:
            self.meter.enter("validation")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.meter.enter("callback" if self.before else "train")


def run(
    setting: dict[str, Any], n_train: int, n_val: int, size: int
) -> tuple[float, float, int, int]:
    """Seconds and images of the validation loop and of the callback, in the last epoch."""
    images, labels, _ = make_shapes(n_train, size=size, seed=0)
    val_images, val_labels, _ = make_shapes(n_val, size=size, seed=1)
    train = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(val_images, val_labels), batch_size=64)
    meter = Meter()
    callback = BORExCallback(
        prior=lambda m: LayerGradCam(m, m.model.features[-1]), seed=0, **setting
    )
    module = Shapes()
    module.model.register_forward_pre_hook(meter.count)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,  # the first epoch pays one-off costs (fonts, TensorBoard writer)
            limit_train_batches=4,
            callbacks=[Mark(meter, before=True), callback, Mark(meter, before=False)],
            logger=pl.loggers.TensorBoardLogger(tmp, name="bench"),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        pl.seed_everything(0, verbose=False)
        trainer.fit(module, train, val)
    return (
        meter.seconds["validation"],
        meter.seconds["callback"],
        meter.images["validation"],
        meter.images["callback"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, two settings")
    args = parser.parse_args()
    n_train, n_val = (256, 256) if args.quick else (1024, 2048)
    size = 64
    settings = [
        {"num_samples": 8, "n_iter": 20},
        {"num_samples": 8, "n_iter": 20, "log_metrics": False},
        {"num_samples": 8, "n_iter": 50},
        {"num_samples": 16, "n_iter": 20},
    ]
    print(
        f"BORExCallback per validation epoch: SmallCNN(width=32), {size}x{size} images, "
        f"{n_val} validation images (batch 64), Grad-CAM prior, TensorBoard logger, "
        f"metric_steps=20; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}"
    )
    print()
    print(
        "| num_samples | n_iter | AUC metrics | validation loop (s) | callback (s) "
        "| callback / validation | images: validation | images: callback |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setting in settings[:2] if args.quick else settings:
        val_s, cb_s, val_n, cb_n = run(setting, n_train, n_val, size)
        metrics = "yes" if setting.get("log_metrics", True) else "no"
        print(
            f"| {setting['num_samples']} | {setting['n_iter']} | {metrics} | {val_s:.2f} "
            f"| {cb_s:.2f} | {cb_s / val_s:.2f}x | {val_n} | {cb_n} |"
        )


if __name__ == "__main__":
    main()
