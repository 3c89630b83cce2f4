"""Speed of BOREx: optimiser cost per image against the published per-image algorithm,
end-to-end time against the model's own time for the same queries, and clips.

    python benchmarks/speed.py            # full run (about 5 minutes on 2 cores)
    python benchmarks/speed.py --quick    # smaller, for a smoke run

Table 1 uses a model that costs nothing (BoxScorer), so only the optimiser is timed; the
reference is a straightforward per-image loop of the published algorithm (scikit-learn GP,
full 224x224x4 window grid, length scales refitted from scratch every step). Map quality is
judged with the same model: deletion / insertion AUC and energy pointing game on its box,
and the map's largest difference from the exactly rebuilt map. Table 2 times BOREx with a
ResNet-18 (random weights) against replaying the same number and size of forward passes.
Table 3 compares the optimiser's time per 16-frame 112x112 clip with its time per 224x224
image at equal iterations.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _models import BoxScorer, ResNet18  # noqa: E402
from _table import machine, print_table  # noqa: E402
from reference_borex import published_borex  # noqa: E402

from captum_borex import RISE, BOREx, BORExSettings  # noqa: E402
from captum_borex.attr._priors import normalise_prior  # noqa: E402
from captum_borex.metrics import deletion_auc, energy_pointing_game, insertion_auc  # noqa: E402

SIZE = 224
HALF_SIZES = (30, 45, 60, 75)


def reference_maps(model: BoxScorer, images: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    out = []
    for image, p in zip(images, prior):

        def score(r: int, c: int, s: int, image: torch.Tensor = image) -> float:
            mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            mask[max(r - s, 0) : r + s, max(c - s, 0) : c + s] = True
            pair = torch.stack([image * ~mask, image * mask])
            with torch.no_grad():
                prob = torch.softmax(model(pair), 1)[:, 0]
            return float(np.tanh(10 * float(prob[1] - prob[0]) / 2))

        out.append(torch.from_numpy(published_borex(score, p.double().numpy(), HALF_SIZES)))
    return torch.stack(out).float()


def quality(model: BoxScorer, images: torch.Tensor, maps: torch.Tensor) -> list[float]:
    target = torch.zeros(len(images), dtype=torch.long)
    return [
        deletion_auc(model, images, maps, target=target).mean().item(),
        insertion_auc(model, images, maps, target=target, substrate="zeros").mean().item(),
        energy_pointing_game(maps, model.mask(len(images), SIZE)).mean().item(),
    ]


def optimiser_table(n_images: int, n_reference: int) -> None:
    torch.manual_seed(0)
    model = BoxScorer((60, 120, 100, 160)).eval()
    images = torch.rand(n_images, 3, SIZE, SIZE)
    target = torch.zeros(n_images, dtype=torch.long)
    raw_prior = RISE(model).attribute(images, target=target, n_masks=30, seed=0)[:, 0]
    prior = normalise_prior(raw_prior, 0.1)

    start = time.perf_counter()
    ref = reference_maps(model, images[:n_reference], prior[:n_reference])
    ref_time = (time.perf_counter() - start) / n_reference

    rows = [["RISE-30 prior alone", "-", "-", "-", *quality(model, images, raw_prior), "-"]]
    rows.append(
        ["published, per image (sklearn)", 1, ref_time, "1.0x"]
        + quality(model, images[:n_reference], ref)
        + ["-"]
    )
    published = BORExSettings.preset("published")
    default = BORExSettings.preset("default")
    settings = [
        ("BOREx, published preset", published, n_reference),
        (
            "BOREx, stride 4, refit every step from scratch",
            default.replace(refit_every=1, warm_start=False),
            n_images,
        ),
        ("BOREx default preset", default, n_images),
        ("BOREx default preset", default, 1),
        ("BOREx, surrogate='field'", default.replace(surrogate="field"), n_images),
    ]
    BOREx(model, prior=raw_prior[:1]).attribute(images[:1], target=0, n_iter=3)  # warm-up
    for name, preset, batch in settings:
        count = batch if batch > 1 else 2
        maps, elapsed = [], 0.0
        for first in range(0, count, batch):
            chunk = slice(first, first + batch)
            borex = BOREx(model, prior=raw_prior[chunk], settings=preset)
            start = time.perf_counter()
            maps.append(borex.attribute(images[chunk], target=0, n_iter=50, seed=0))
            elapsed += time.perf_counter() - start
        maps = torch.cat(maps)
        error = float("nan")
        if preset.surrogate == "windows":
            exact = BOREx(
                model, prior=raw_prior[:count], settings=preset.replace(exact_map=True)
            ).attribute(images[:count], target=0, n_iter=50, seed=0)
            error = ((maps - exact).abs().amax() / (exact.amax() - exact.amin())).item()
        per_image = elapsed / count
        rows.append(
            [name, batch, per_image, f"{ref_time / per_image:.1f}x"]
            + quality(model, images[:count], maps)
            + [f"{100 * error:.2f}%" if error == error else "-"]
        )
    print_table(
        f"Table 1. Optimiser time per image, 224x224, 50 iterations, cost-free model "
        f"(reference and published settings on {n_reference} images)",
        [
            "method",
            "batch",
            "s / image",
            "speed-up",
            "deletion (lower)",
            "insertion (higher)",
            "energy PG",
            "max map error vs exact rebuild",
        ],
        rows,
    )


def end_to_end_table(n_images: int) -> None:
    torch.manual_seed(0)
    model = ResNet18().eval()
    images = torch.rand(n_images, 3, SIZE, SIZE)
    target = torch.randint(0, 1000, (n_images,))
    borex = BOREx(model, prior=torch.rand(n_images, SIZE, SIZE))

    passes = borex.calls_per_input(50)

    def model_alone() -> float:
        # The same model work as BOREx: every image `passes` times, 2N inputs a call.
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, passes, 2):
                model(torch.cat([images] * min(2, passes - first)))
        return time.perf_counter() - start

    with torch.no_grad():
        model(torch.cat([images, images]))  # warm-up
    before = model_alone()
    start = time.perf_counter()
    borex.attribute(images, target=target, n_iter=50, seed=0)
    total = time.perf_counter() - start
    after = model_alone()
    alone = (before + after) / 2
    print_table(
        f"Table 2. End to end with a ResNet-18, batch {n_images}, 224x224, 50 iterations "
        "(model alone: mean of a run before and after)",
        ["BOREx total (s)", "model alone, same passes (s)", "ratio"],
        [[total, alone, total / alone]],
    )


class ClipScorer(torch.nn.Module):
    """A cost-free clip model: class 0 rises with the mean of one spatio-temporal box."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 12 * (x[:, :, 4:9, 30:70, 40:80].mean(dim=(1, 2, 3, 4)) - 0.25)
        return torch.stack([z, torch.zeros_like(z)], 1)


def timed(model: torch.nn.Module, inputs: torch.Tensor, prior: torch.Tensor) -> tuple:
    """BOREx maps, and the best of three runs' seconds per item in total and in the
    optimiser alone (this machine's timings vary by about 20% from run to run)."""
    BOREx(model).attribute(inputs[:1], target=0, n_iter=2)  # warm-up
    totals, optimiser = [], []
    for _ in range(3):
        start = time.perf_counter()
        details = BOREx(model, prior=prior).attribute(
            inputs, target=0, n_iter=50, seed=0, return_details=True
        )
        totals.append((time.perf_counter() - start) / len(inputs))
        optimiser.append(details.seconds["optimiser"] / len(inputs))
    return details.attributions, min(totals), min(optimiser)


def clip_table(n_items: int) -> None:
    torch.manual_seed(0)
    image_model = BoxScorer((60, 120, 100, 160)).eval()
    images = torch.rand(n_items, 3, SIZE, SIZE)
    image_prior = RISE(image_model).attribute(images, target=0, n_masks=30, seed=0)
    _, image_total, image_optimiser = timed(image_model, images, image_prior[:, 0])

    model = ClipScorer()
    clips = torch.rand(n_items, 3, 16, 112, 112)
    prior = RISE(model).attribute(clips, target=0, n_masks=30, seed=0, cells=(4, 7, 7))
    refined, clip_total, clip_optimiser = timed(model, clips, prior[:, 0])
    truth = torch.zeros(n_items, 16, 112, 112, dtype=torch.bool)
    truth[:, 4:9, 30:70, 40:80] = True
    target = torch.zeros(n_items, dtype=torch.long)

    def measures(maps: torch.Tensor) -> list[float]:
        return [
            deletion_auc(model, clips, maps, target=target, n_steps=50).mean().item(),
            insertion_auc(model, clips, maps, target=target, n_steps=50, substrate="zeros")
            .mean()
            .item(),
            energy_pointing_game(maps, truth).mean().item(),
        ]

    print_table(
        f"Table 3. Clips 16x112x112 against images 224x224, batch {n_items}, 50 iterations, "
        "cost-free box models; 'optimiser' excludes building the perturbed inputs",
        [
            "input",
            "s / item, total",
            "s / item, optimiser",
            "optimiser vs image",
            "deletion (lower)",
            "insertion (higher)",
            "energy PG",
        ],
        [
            ["image, BOREx", image_total, image_optimiser, "1.00x", "-", "-", "-"],
            ["clip, RISE-30 prior", "-", "-", "-", *measures(prior)],
            [
                "clip, BOREx over it",
                clip_total,
                clip_optimiser,
                f"{clip_optimiser / image_optimiser:.2f}x",
                *measures(refined),
            ],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    args = parser.parse_args()
    print(machine())
    optimiser_table(n_images=8, n_reference=1 if args.quick else 2)
    end_to_end_table(n_images=2 if args.quick else 8)
    clip_table(n_items=2 if args.quick else 8)


if __name__ == "__main__":
    main()
