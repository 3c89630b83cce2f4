"""The quickstart (examples/quickstart.py): equal-call Occlusion, its shapes data, a smoke run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from captum.attr import Occlusion

from captum_borex import BORExSettings
from captum_borex.synthetic import make_shapes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
quickstart = pytest.importorskip("quickstart")


@pytest.mark.parametrize("calls", [13, 53, 103, 203])
def test_occlusion_grid_gives_the_closest_count_of_passes(calls: int) -> None:
    size = 224
    window, stride = quickstart.occlusion_grid(size, calls)
    counter = quickstart.CallCounter(torch.nn.Linear(3 * size * size, 2))
    model = torch.nn.Sequential(torch.nn.Flatten(), counter)
    Occlusion(model).attribute(
        torch.rand(1, 3, size, size),
        target=0,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        perturbations_per_eval=64,
    )
    per_axis = round((calls - 1) ** 0.5)
    assert counter.images == per_axis**2 + 1
    assert (size - window) % stride == 0  # the windows tile the image to its last pixel
    assert abs(counter.images - calls) <= min(
        abs((per_axis + k) ** 2 + 1 - calls) for k in (-1, 0, 1)
    )


def test_empty_shapes_images_have_no_object() -> None:
    images, labels = quickstart.shapes_with_empty_images(40, seed=3).tensors
    originals, original_labels, masks = make_shapes(40, seed=3)
    assert bool((labels[-10:] == quickstart.NO_OBJECT).all())
    assert torch.equal(labels[:30], original_labels[:30])
    assert torch.equal(images[:30], originals[:30])
    boxes = masks[-10:, None].expand(-1, 3, -1, -1)
    assert float(images[-10:][boxes].max()) <= 0.05  # the object painted over with noise
    blank, kept = images[-10::2], slice(-9, None, 2)
    assert float(blank.max()) <= 0.05  # every other one: no distractor either
    outside = ~boxes[1::2]
    assert torch.equal(images[kept][outside], originals[kept][outside])  # the distractor stays


def test_quickstart_runs_and_warns_nothing(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("skimage")
    pytest.importorskip("tensorboard")
    command = [
        sys.executable,
        str(ROOT / "examples" / "quickstart.py"),
        *("--out", str(tmp_path), "--photos", "chelsea", "coffee", "--size", "96"),
        *("--n-iter", "3", "--metric-steps", "4", "--epochs", "1"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for name in ("explanations.png", "table.md", "table.csv"):
        assert (tmp_path / name).is_file()
    # BOREx's calls include its prior's (Grad-CAM: one backward pass).
    borex_calls = BORExSettings().calls_per_input(3) + 1
    assert f"BOREx, 3 rounds: {borex_calls} model calls per image" in done.stdout
    assert "Occlusion, window 24, stride 18: 26 model calls per image" in done.stdout
