"""CAMERAS against Grad-CAM at the same layer: cost per image, and map quality.

    python benchmarks/cameras.py            # full run (a few minutes on 2 cores)
    python benchmarks/cameras.py --quick    # fewer images, for a smoke run

Table 1 times both methods on a small five-stage conv net (random weights) at 224x224 and
measures their peak memory (Linux only). Peak memory is the growth of the peak resident set
size over one call on the whole batch: ``VmHWM`` from ``/proc/self/status`` (the kernel's
high-water mark; ``resource.getrusage``'s ``ru_maxrss`` would inherit the parent's) minus
the resident size just before the call. Each call runs in a fresh subprocess, so earlier
calls cannot hide its peak, whose glibc is told to unmap large freed blocks at once
(``MALLOC_MMAP_THRESHOLD_=65536``), so the resident size follows the live tensors rather
than the allocator's cache. Time is the median of a few calls after a warm-up.

Table 2 scores maps on the synthetic shapes task (32x32 images, one 7-pixel object) with a
small CNN whose last conv block sees the image as 4 x 4 cells, so Grad-CAM is coarse there:
deletion AUC (zeros substrate; lower is better), insertion AUC (blur substrate; higher is
better), pointing game (tolerance 2 px) and energy pointing game (share of the map inside the
object's box). It is run twice: for a model trained at one scale only, and for one trained on
images shown at 1x, 2x and 3x, the kind of scale robustness CAMERAS relies on.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from captum_borex.attr.cameras import CAMERAS
from captum_borex.metrics import (
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    pointing_game,
)
from captum_borex.synthetic import make_shapes, train_classifier

SIZE = 224
#: glibc serves blocks above this size with mmap and unmaps them when freed, so the resident
#: set follows the live tensors instead of the allocator's cache of freed memory.
MMAP_VARIABLE = "MALLOC_MMAP_THRESHOLD_"


class FiveStageNet(nn.Module):
    """Five stride-2 conv stages (16 to 256 channels): a 224-pixel image ends as 7 x 7 cells."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (16, 32, 64, 128, 256):
            layers += [
                nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1),
                nn.ReLU(),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((-2, -1)))


class PooledCNN(nn.Module):
    """Three 2x max-poolings: a 32-pixel image ends as 4 x 4 cells (as in the tests)."""

    def __init__(self, width: int = 8, n_classes: int = 3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * w, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).amax((-2, -1)))


def grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Grad-CAM (ReLU) upsampled bilinearly to the input, as users display it."""
    maps = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(maps.detach(), tuple(x.shape[-2:]), "bilinear")


def speed_methods() -> dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]]:
    def cameras(**kwargs):
        def run(model, x, target):
            return CAMERAS(model, model.features[-1]).attribute(x, target=target, **kwargs)

        return run

    return {
        "LayerGradCam (+ upsampling)": lambda m, x, t: grad_cam(m, m.features[-1], x, t),
        "CAMERAS, scales (1, 2, 3)": cameras(scales=(1, 2, 3)),
        "CAMERAS, default (7 scales, 1 to 4)": cameras(),
        "CAMERAS, default, channel_chunk=256 (all at once)": cameras(channel_chunk=256),
        "CAMERAS, default, internal_batch_size=1": cameras(internal_batch_size=1),
    }


def _speed_setup(n_images: int) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = FiveStageNet().eval()
    x = torch.rand(n_images, 3, SIZE, SIZE)
    target = torch.arange(n_images) % 10
    return model, x, target


def _status_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _peak_memory_worker(name: str, n_images: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    model, x, target = _speed_setup(n_images)
    with torch.no_grad():  # load the kernels at a small size, far below the measured peak
        model(x[:1, :, :64, :64])
    before = _status_mib("VmRSS")
    speed_methods()[name](model, x, target)
    queue.put(max(_status_mib("VmHWM") - before, 0.0))


def peak_memory_mib(name: str, n_images: int, threads: int) -> float:
    """Peak RSS growth of one call, in a fresh process whose glibc returns freed blocks."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_worker, args=(name, n_images, threads, queue))
    saved = os.environ.get(MMAP_VARIABLE)
    os.environ[MMAP_VARIABLE] = "65536"  # read by the child's allocator at start-up
    try:
        process.start()
    finally:
        if saved is None:
            del os.environ[MMAP_VARIABLE]
        else:
            os.environ[MMAP_VARIABLE] = saved
    value = queue.get()
    process.join()
    return value


def seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed_table(n_images: int, repeats: int) -> None:
    model, x, target = _speed_setup(n_images)
    threads = torch.get_num_threads()
    print(
        f"\nTable 1. Cost per image, FiveStageNet (random weights) at {SIZE}x{SIZE}, "
        f"layer features[-1] (7x7x256), batch {n_images}, {threads} threads"
    )
    print(f"| method | time / image (s) | peak memory, batch of {n_images} (MiB) | per image |")
    print("|---|---|---|---|")
    for name, method in speed_methods().items():
        t = seconds(lambda method=method: method(model, x, target), repeats) / n_images
        mem = peak_memory_mib(name, n_images, threads)
        print(f"| {name} | {t:.3f} | {mem:.0f} | {mem / n_images:.0f} |")


def train_at_scales(
    scales: tuple[int, ...], images: Tensor, labels: Tensor, epochs: int = 8
) -> nn.Module:
    """A PooledCNN trained on images shown at one of ``scales`` (one scale per batch)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PooledCNN()
    return train_classifier(model, images, labels, epochs=epochs, seed=0, scales=scales)


def quality_table(n_images: int) -> None:
    train_images, train_labels, _ = make_shapes(800, seed=0)
    images, labels, masks = make_shapes(n_images, seed=1)
    print(
        f"\nTable 2. Map quality on synthetic shapes (32x32, 7-pixel objects), "
        f"{n_images} held-out images, layer features[-1] (4x4 cells)"
    )
    print(
        "| model trained at | accuracy 1x / 2x / 4x | method | deletion AUC (lower) | "
        "insertion AUC (higher) | pointing game | energy pointing game |"
    )
    print("|---|---|---|---|---|---|---|")
    for scales in ((1,), (1, 2, 3)):
        model = train_at_scales(scales, train_images, train_labels)
        layer = model.features[-1]
        with torch.no_grad():
            accuracy = [
                (model(F.interpolate(images, scale_factor=s, mode="bicubic")).argmax(1) == labels)
                .float()
                .mean()
                .item()
                for s in (1, 2, 4)
            ]
        maps = {
            "LayerGradCam": grad_cam(model, layer, images, labels),
            "CAMERAS, scales (1,)": CAMERAS(model, layer).attribute(
                images, target=labels, scales=(1,)
            ),
            "CAMERAS, default scales": CAMERAS(model, layer).attribute(images, target=labels),
        }
        for name, saliency in maps.items():
            deletion = deletion_auc(model, images, saliency, target=labels).mean()
            insertion = insertion_auc(model, images, saliency, target=labels).mean()
            hits = pointing_game(saliency, masks, tolerance=2).float().mean()
            energy = energy_pointing_game(saliency, masks).mean()
            trained = "/".join(f"{s}x" for s in scales)
            accs = " / ".join(f"{a:.2f}" for a in accuracy)
            print(
                f"| {trained} | {accs} | {name} | {deletion:.3f} | {insertion:.3f} | "
                f"{hits:.2f} | {energy:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    speed_table(n_images=2 if args.quick else 4, repeats=1 if args.quick else 3)
    quality_table(n_images=32 if args.quick else 256)


if __name__ == "__main__":
    main()
