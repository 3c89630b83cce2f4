"""Synthetic data with known salient regions, and small CNNs, for examples and tests.

Each image holds one *class object* (a small shape whose form decides the class) and one
*distractor* (a filled square, the same in every class) at random places on a dark, noisy
background. A model that solves the task must look at the object, so its bounding box is
a ground-truth mask for localisation measures. Clips add time: the object shows only in a
contiguous run of frames, the distractor in every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Shapes drawn for each class, on a ``size x size`` stamp (1 = ink).
SHAPE_NAMES = ("plus", "ring", "cross")


def _stamp(name: str, size: int) -> Tensor:
    s = torch.zeros(size, size)
    mid, idx = size // 2, torch.arange(size)
    if name == "plus":
        s[mid, :] = 1
        s[:, mid] = 1
    elif name == "ring":
        s[0, :] = s[-1, :] = s[:, 0] = s[:, -1] = 1
    elif name == "cross":
        s[idx, idx] = 1
        s[idx, size - 1 - idx] = 1
    elif name == "square":
        s[:] = 1
    else:
        raise ValueError(f"unknown shape {name!r}")
    return s


def make_shapes(
    n: int,
    size: int = 32,
    object_size: int = 7,
    n_classes: int = 3,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A batch of synthetic images whose class is the shape of one small object.

    Args:
        n: Number of images.
        size: Image side in pixels. Default: 32
        object_size: Side of the object and the distractor in pixels. Default: 7
        n_classes: Number of classes (at most 3). Default: 3
        seed: Seed of everything random. Default: 0

    Returns:
        ``images (n, 3, size, size)`` in [0, 1], ``labels (n,)``, ``masks (n, size, size)``
        (True on the object's bounding box).

    Examples::

        >>> images, labels, masks = make_shapes(16, seed=1)
        >>> images.shape, masks.dtype
        (torch.Size([16, 3, 32, 32]), torch.bool)
    """
    if not 1 <= n_classes <= len(SHAPE_NAMES):
        raise ValueError(f"n_classes must be in 1..{len(SHAPE_NAMES)}, got {n_classes}")
    if size < 2 * object_size + 2:
        raise ValueError(
            f"size must be at least {2 * object_size + 2} for object_size {object_size}"
        )
    gen = torch.Generator().manual_seed(seed)
    images = 0.05 * torch.rand(n, 3, size, size, generator=gen)
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    stamps = [_stamp(name, object_size) for name in SHAPE_NAMES[:n_classes]]
    square = _stamp("square", object_size)
    span = size - object_size + 1
    for i in range(n):
        while True:
            (r1, c1), (r2, c2) = torch.randint(0, span, (2, 2), generator=gen).tolist()
            if abs(r1 - r2) > object_size or abs(c1 - c2) > object_size:
                break
        colour = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=gen)
        box = (slice(r1, r1 + object_size), slice(c1, c1 + object_size))
        ink = stamps[int(labels[i])]
        images[i, :, box[0], box[1]] = torch.where(ink > 0, colour, images[i, :, box[0], box[1]])
        images[i, :, r2 : r2 + object_size, c2 : c2 + object_size] = colour * square
        masks[i, box[0], box[1]] = True
    return images, labels, masks


def make_clips(
    n: int,
    frames: int = 8,
    size: int = 32,
    object_size: int = 7,
    duration: int = 3,
    n_classes: int = 3,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Synthetic clips whose class is the shape of an object seen in a few frames only.

    Args:
        n: Number of clips.
        frames: Frames per clip. Default: 8
        size: Frame side in pixels. Default: 32
        object_size: Side of the object and the distractor. Default: 7
        duration: Number of consecutive frames showing the object. Default: 3
        n_classes: Number of classes (at most 3). Default: 3
        seed: Seed of everything random. Default: 0

    Returns:
        ``clips (n, 3, frames, size, size)`` in [0, 1], ``labels (n,)`` and spatio-temporal
        ``masks (n, frames, size, size)`` (True on the object's box in the frames it shows).

    Examples::

        >>> clips, labels, masks = make_clips(4, frames=8)
        >>> clips.shape
        torch.Size([4, 3, 8, 32, 32])
    """
    if not 1 <= duration <= frames:
        raise ValueError(f"duration must be in 1..frames ({frames}), got {duration}")
    images, labels, boxes = make_shapes(n, size, object_size, n_classes, seed)
    # The same scenes without their objects: the object stamped with the background.
    gen = torch.Generator().manual_seed(seed + 1)
    background = 0.05 * torch.rand(n, 3, frames, size, size, generator=gen)
    clips = background.clone()
    start = torch.randint(0, frames - duration + 1, (n,), generator=gen)
    masks = torch.zeros(n, frames, size, size, dtype=torch.bool)
    distractor = images * ~boxes[:, None]
    for i in range(n):
        shown = slice(int(start[i]), int(start[i]) + duration)
        ink = images[i] * boxes[i]
        clips[i] = torch.maximum(clips[i], distractor[i][:, None])
        clips[i, :, shown] = torch.maximum(clips[i, :, shown], ink[:, None])
        masks[i, shown] = boxes[i]
    return clips, labels, masks


class SmallCNN(nn.Module):
    """A small convolutional classifier: three conv blocks, global max pooling, a linear head.

    Args:
        n_classes: Number of outputs. Default: 3
        in_channels: Input channels. Default: 3
        width: Channels of the conv layers. Default: 32

    Attributes:
        features: The convolutional trunk (``features[-1]`` is a good Grad-CAM layer).
    """

    def __init__(self, n_classes: int = 3, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).amax(dim=(-2, -1)))


class SmallCNN3d(nn.Module):
    """A small 3-D convolutional classifier for clips ``(N, C, T, H, W)``.

    Args:
        n_classes: Number of outputs. Default: 3
        in_channels: Input channels. Default: 3
        width: Channels of the conv layers. Default: 16

    Attributes:
        features: The convolutional trunk (``features[-2]`` is its last Conv3d).
    """

    def __init__(self, n_classes: int = 3, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).amax(dim=(-3, -2, -1)))


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    scales: Sequence[float] = (1,),
) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy; returns it in eval mode.

    Args:
        model: Any classifier.
        images: Training inputs.
        labels: Training labels.
        epochs: Passes over the data. Default: 8
        batch_size: Minibatch size. Default: 64
        lr: Adam learning rate. Default: 3e-3
        seed: Seed of the shuffling (the global RNG is left as it was). Default: 0
        scales: Each batch is shown at one of these sizes, drawn at random (bicubic
            resizing), as multi-scale training does; a model for CAMERAS should still
            recognise an enlarged input. Default: (1,)
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(images))
            for start in range(0, len(images), batch_size):
                idx = order[start : start + batch_size]
                x = images[idx]
                if len(scales) > 1:
                    scale = scales[int(torch.randint(0, len(scales), (1,)))]
                    if scale != 1:
                        x = nn.functional.interpolate(
                            x, scale_factor=scale, mode="bicubic", align_corners=False
                        )
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(model(x), labels[idx])
                loss.backward()
                optimiser.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    return model
