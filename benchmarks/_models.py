"""Models for the benchmarks: a cost-free scorer and a ResNet-18 built here (no downloads)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BoxScorer(nn.Module):
    """A model that costs (almost) nothing: its class-0 logit rises with the mean of one box.

    ``logit_0 = 12 * (mean of the input over rows r0:r1, cols c0:c1 - 0.25)``, logit_1 = 0,
    so the box is the only salient region, and its mask is the ground truth.
    """

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.box = box

    def forward(self, x: Tensor) -> Tensor:
        r0, r1, c0, c1 = self.box
        z = 12 * (x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3)) - 0.25)
        return torch.stack([z, torch.zeros_like(z)], 1)

    def mask(self, n: int, size: int) -> Tensor:
        r0, r1, c0, c1 = self.box
        out = torch.zeros(n, size, size, dtype=torch.bool)
        out[:, r0:r1, c0:c1] = True
        return out


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """The ResNet-18 architecture (He et al., 2016), randomly initialised."""

    def __init__(self, n_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))
