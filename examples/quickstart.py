"""Quickstart: train a small CNN with Lightning while BOREx explanations are logged, then
explain it with a weak prior and with BOREx, and compare.

Training runs under ``BORExCallback`` with a TensorBoard logger: after every epoch the
callback refines Grad-CAM maps of a few fixed validation images and logs the figure and the
deletion / insertion AUC of both maps (see them with ``tensorboard --logdir OUT/lightning``;
the figures are also written as ``OUT/lightning/shapes/version_*/borex/epoch_*.png``).

Then writes ``explanations.png`` (input, prior, refined map, uncertainty for a few validation
images) and ``table.md`` / ``table.csv`` (deletion and insertion AUC of the prior and the
refined maps, with the pointing-game hit rate) to ``--out``.

    python examples/quickstart.py --out outputs/quickstart
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from captum_borex import RISE, BOREx
from captum_borex.lightning import BORExCallback
from captum_borex.metrics import deletion_auc, insertion_auc, pointing_game
from captum_borex.synthetic import SmallCNN, make_shapes
from captum_borex.viz import explanation_grid

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl


class ShapesClassifier(pl.LightningModule):
    """A LightningModule around SmallCNN: cross-entropy, Adam."""

    def __init__(self, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = SmallCNN(width=width)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def train_with_explanations(out: Path, epochs: int) -> SmallCNN:
    """Train with Lightning; BORExCallback logs refined Grad-CAM maps after every epoch."""
    images, labels, _ = make_shapes(1500, seed=0)
    val_images, val_labels, _ = make_shapes(256, seed=2)
    train = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(val_images, val_labels), batch_size=128)

    callback = BORExCallback(
        prior=lambda module: LayerGradCam(module, module.model.features[-1]),
        num_samples=4,  # the first 4 validation images, tracked every epoch
        n_iter=20,
        save_png=True,  # PNGs next to the TensorBoard events as well
    )
    logger = pl.loggers.TensorBoardLogger(str(out / "lightning"), name="shapes")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    pl.seed_everything(0, verbose=False)
    module = ShapesClassifier()
    trainer.fit(module, train, val)
    metrics = trainer.callback_metrics
    print(
        f"after {epochs} epochs: val_acc {float(metrics['val_acc']):.3f}; tracked images' "
        f"deletion AUC (lower is better): Grad-CAM {float(metrics['borex/deletion_auc_prior']):.3f}"
        f", BOREx {float(metrics['borex/deletion_auc_refined']):.3f}"
    )

    print(f"training logs: tensorboard --logdir {out / 'lightning'}")
    print("  images: borex/explanations (input, Grad-CAM, BOREx, uncertainty) per epoch")
    print("  scalars: borex/{deletion,insertion}_auc_{prior,refined}, val_acc, val_loss")
    pngs = sorted((Path(trainer.log_dir) / "borex").glob("*.png"))
    print(f"  PNGs written: {', '.join(str(p) for p in pngs)}")
    return module.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("--n-explain", type=int, default=16, help="validation images to explain")
    parser.add_argument("--n-iter", type=int, default=50, help="BOREx iterations")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    print("training a small CNN on synthetic shapes, with BOREx explanations logged ...")
    model = train_with_explanations(args.out, args.epochs)
    val_images, val_labels, val_masks = make_shapes(args.n_explain, seed=1)
    with torch.no_grad():
        accuracy = (model(val_images).argmax(1) == val_labels).float().mean().item()
    print(f"validation accuracy: {accuracy:.3f}")

    rise = RISE(model)
    prior_kwargs = {"n_masks": 30, "seed": 0}
    prior = rise.attribute(val_images, target=val_labels, **prior_kwargs)
    start = time.perf_counter()
    details = BOREx(model, prior=rise).attribute(
        val_images,
        target=val_labels,
        n_iter=args.n_iter,
        seed=0,
        prior_kwargs=prior_kwargs,
        return_details=True,
    )
    elapsed = time.perf_counter() - start
    refined = details.attributions
    print(f"BOREx refined {len(val_images)} images in {elapsed:.1f} s")

    rows = []
    for name, maps in (("RISE, 30 masks (prior)", prior), ("BOREx over it", refined)):
        rows.append(
            {
                "map": name,
                "deletion AUC (lower is better)": deletion_auc(
                    model, val_images, maps, target=val_labels
                )
                .mean()
                .item(),
                "insertion AUC (higher is better)": insertion_auc(
                    model, val_images, maps, target=val_labels
                )
                .mean()
                .item(),
                "pointing game": pointing_game(maps, val_masks, tolerance=1).float().mean().item(),
            }
        )
    write_tables(rows, args.out)

    shown = slice(0, 6)
    figure = explanation_grid(
        val_images[shown],
        {"RISE-30 prior": prior[shown], "BOREx": refined[shown]},
        details.uncertainty[shown],
        titles=[f"class {int(c)}" for c in val_labels[shown]],
    )
    figure.savefig(args.out / "explanations.png", dpi=100)
    print(
        f"wrote {args.out / 'explanations.png'}, {args.out / 'table.md'}, {args.out / 'table.csv'}"
    )


def write_tables(rows: list[dict[str, object]], out: Path) -> None:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
