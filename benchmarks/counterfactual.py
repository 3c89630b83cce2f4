"""CAMERAS' claim measured: a good map's region needs a smaller change to flip the model.

At equal region size, the region of a Grad-CAM map should flip a classifier with a smaller
L2 change than a random region (a compact blob at a random place, picked the same way from
a random map) or the least-salient region (picked from the negated map); and regions from
Grad-CAM, from BOREx refining it and from RISE are compared on flip rate and L2.

Synthetic shapes (32x32, the class is an object's shape), a SmallCNN trained here, every
held-out image asked to become the next class, pixel stage only with bounds (0, 1).

Run: ``python benchmarks/counterfactual.py [--n 48] [--borex-iter 30]``; prints a Markdown
table and writes ``benchmarks/results/counterfactual.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from captum.attr import LayerGradCam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import machine, print_table  # noqa: E402

from captum_borex import RISE, BOREx  # noqa: E402
from captum_borex.counterfactual import RegionCounterfactual, saliency_maps  # noqa: E402
from captum_borex.synthetic import SmallCNN, make_shapes, train_classifier  # noqa: E402

REGIONS = (0.05, 0.1, 0.2)


def trained_model() -> SmallCNN:
    images, labels, _ = make_shapes(1500, seed=0)
    torch.manual_seed(0)
    model = train_classifier(SmallCNN(width=16), images, labels, epochs=6, seed=0)
    return model.requires_grad_(False)


def region_maps(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor, borex_iter: int):
    """Each source's ``(N, H, W)`` maps of the true class, and the seconds it took."""
    gradcam = LayerGradCam(model, model.features[-1])
    sources = {
        "Grad-CAM": (gradcam, {}),
        "BOREx(Grad-CAM)": (BOREx(model, prior=gradcam), {"n_iter": borex_iter, "seed": 0}),
        "RISE": (RISE(model), {"n_masks": 1000, "seed": 0}),
    }
    maps, seconds = {}, {}
    for name, (method, kwargs) in sources.items():
        began = time.perf_counter()
        maps[name] = saliency_maps(method, images, labels, saliency_kwargs=kwargs)
        seconds[name] = time.perf_counter() - began
    maps["least salient (-Grad-CAM)"] = -maps["Grad-CAM"]
    generator = torch.Generator().manual_seed(0)
    maps["random"] = torch.rand(maps["Grad-CAM"].shape, generator=generator)
    return maps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48, help="held-out images")
    parser.add_argument("--borex-iter", type=int, default=30, help="BOREx evaluations")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = trained_model()
    images, labels, masks = make_shapes(args.n, seed=1)
    target = (labels + 1) % 3
    maps, seconds = region_maps(model, images, labels, args.borex_iter)
    header = ["region", "map", "flip rate", "mean L2", "L2 of flipped", "steps", "on object"]
    rows = []
    for share in REGIONS:
        for name, source in maps.items():
            result = RegionCounterfactual(model, source).generate(
                images, target, original=labels, region=share, bounds=(0.0, 1.0)
            )
            flipped = result.flipped
            on_object = (result.region[:, 0] & masks).flatten(1).sum(1) / masks.flatten(1).sum(1)
            rows.append(
                [
                    share,
                    name,
                    float(flipped.float().mean()),
                    float(result.l2.mean()),
                    float(result.l2[flipped].mean()) if flipped.any() else float("nan"),
                    float(result.steps.float().mean()),
                    float(on_object.mean()),
                ]
            )
    command = f"python benchmarks/counterfactual.py --n {args.n} --borex-iter {args.borex_iter}"
    title = f"Counterfactual change per region source ({args.n} images; {machine()})"
    print_table(title, header, rows)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    print(f"\nmaps took: {timing}")
    write_results(command, title, header, rows, timing)


def write_results(command, title, header, rows, timing) -> None:
    """``benchmarks/results/counterfactual.md`` with the table and the command."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [
        "# Counterfactuals: region source vs. change needed to flip",
        "",
        f"Command: `{command}`",
        "",
        f"{title}. Pixel stage (defaults: step 0.05, keep 0.2, confidence 0.9, 200 steps), "
        "bounds (0, 1); 'mean L2' counts inputs that did not flip at their final change; "
        "'on object' is the share of the object's box inside the region. "
        f"Maps took: {timing}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]
    path = Path(__file__).resolve().parent / "results" / "counterfactual.md"
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
