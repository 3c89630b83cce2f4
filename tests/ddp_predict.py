"""Explain a small dataset with ExplanationWriter under ``trainer.predict``, in its own process.

    python tests/ddp_predict.py OUTPUT_DIR [--devices 2] [--n 13]

With several devices, first trains one epoch with BORExCallback and a CSVLogger under
OUTPUT_DIR/fit. Then writes OUTPUT_DIR/lightning_sampler (Lightning's own distributed
sampler, which does not pad in predict) and OUTPUT_DIR/padded_sampler (a DistributedSampler
of the user's, which pads the data with repeated samples to a multiple of the number of
processes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from captum_borex.lightning import BORExCallback, ExplanationWriter, load_explanations
from captum_borex.lightning._compat import pl
from captum_borex.synthetic import SmallCNN, make_shapes

#: Small BOREx settings for 32x32 images: fast enough for the tests.
BOREX_SETTINGS = {"n_iter": 4, "window_sizes": (6, 10)}


class ShapesModule(pl.LightningModule):
    """SmallCNN on make_shapes images, optionally with BatchNorm and dropout."""

    def __init__(self, width: int = 8, norm_and_dropout: bool = False, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = SmallCNN(width=width)
        if norm_and_dropout:
            self.model.features.insert(1, nn.BatchNorm2d(width // 2))
            self.model.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(width, 3))
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0]).argmax(1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def gradcam(module: ShapesModule) -> LayerGradCam:
    """The Grad-CAM prior of the tests."""
    return LayerGradCam(module, module.model.features[-1])


def shapes_loader(n: int, seed: int, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    images, labels, _ = make_shapes(n, seed=seed)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle)


class PaddedShapes(pl.LightningDataModule):
    """Predict data behind the user's own (padding) DistributedSampler."""

    def __init__(self, n: int) -> None:
        super().__init__()
        images, labels, _ = make_shapes(n, seed=3)
        self.dataset = TensorDataset(images, labels)

    def predict_dataloader(self) -> DataLoader:
        sampler = DistributedSampler(self.dataset, shuffle=False)  # pads to a multiple
        return DataLoader(self.dataset, batch_size=4, sampler=sampler)


def fit_with_callback(root: Path, devices: int) -> None:
    """One epoch of DDP training with BORExCallback and a CSVLogger."""
    pl.seed_everything(0, verbose=False)
    callback = BORExCallback(prior=gradcam, num_samples=3, metric_steps=8, **BOREX_SETTINGS)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp",
        max_epochs=1,
        limit_train_batches=2,
        callbacks=[callback],
        logger=pl.loggers.CSVLogger(str(root), name="run"),
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShapesModule(), shapes_loader(32, seed=0), shapes_loader(16, seed=1))
    print(
        f"fit, rank {trainer.global_rank}: explained {callback.last_explanation is not None}",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--n", type=int, default=13)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.devices > 1:
        fit_with_callback(args.output_dir / "fit", args.devices)
    # Lightning's own sampler (no padding in predict), then a user's padding sampler.
    for name in ("lightning_sampler", "padded_sampler"):
        pl.seed_everything(0, verbose=False)
        module = ShapesModule()
        writer = ExplanationWriter(args.output_dir / name, prior=gradcam, **BOREX_SETTINGS)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=args.devices,
            strategy="ddp" if args.devices > 1 else "auto",
            callbacks=[writer],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        if name == "lightning_sampler":
            data = {"dataloaders": shapes_loader(args.n, seed=3, batch_size=4)}
        else:
            data = {"datamodule": PaddedShapes(args.n)}
        trainer.predict(module, return_predictions=False, **data)
        # The documented pattern: load right after predict, on every rank.
        indices, _ = load_explanations(args.output_dir / name)
        print(
            f"{name}, rank {trainer.global_rank}: wrote {len(writer.written)} shards, "
            f"skipped {len(writer.skipped)}, loaded {len(indices)} indices",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
