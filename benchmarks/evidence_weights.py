"""Which evidence should the map be built from? BOREx at equal model calls on the photos,
every weighting of its kinds of evidence scored from one search.

    python benchmarks/evidence_weights.py --device cuda                 # 128 pixels
    python benchmarks/evidence_weights.py --device cuda --photo-size 224 --configs blur-smooth-last
    python benchmarks/evidence_weights.py --n-images 4 --seeds 1 --budgets 26   # CPU smoke run

For each search setting (prior layer, ``queries``, ``keep_baselines``, ``map_prior``) and
each budget of ``benchmarks/quality.py`` (Occlusion's calls at three window sizes: 26, 50
and 101), BOREx runs once per seed with ``map_from`` naming every kind of evidence its
queries observe ("both", "delete", "keep"; see ``BOREx.attribute``) and
``return_details=True``. Each weighting below is then ``rank_fusion`` of
``BORExDetails.evidence_maps``: the same windows and model calls, only the map differs, so
one search scores them all. Deletion (black substrate, lower is better) and insertion
(blurred substrate, higher is better) are averaged over the images and seeds; RISE too is
averaged over the seeds. A cell wins (``*``) when it beats both RISE and Occlusion of its
budget on both means, the bar of the quality benchmark's equal-budget rows.

Photos and model as in ``benchmarks/quality.py`` (72 images: 9 photos, 4 crops, mirrored;
EfficientNet-Lite0 from the ``real`` extra). On an H100 with 3 seeds all 8 settings took
325 s at 128 pixels and three of them 182 s at 224; on a 2-core CPU each map scored takes
about a minute at 128 pixels (90 maps per setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
import quality as Q  # noqa: E402
from _table import machine, print_table  # noqa: E402

from captum_borex import BOREx, BORExSettings, rank_fusion  # noqa: E402
from captum_borex.attr.settings import NEEDS  # noqa: E402

#: Search settings: (Grad-CAM's EfficientNet block, None for the last layer; options).
SETTINGS: dict[str, tuple[int | None, dict[str, Any]]] = {
    "defaults-b10": (10, {}),
    "defaults-smooth-last": (None, {"map_prior": "smoothed"}),
    "blur-b10": (10, {"keep_baselines": "blur"}),
    "blur-smooth-b10": (10, {"keep_baselines": "blur", "map_prior": "smoothed"}),
    "blur-last": (None, {"keep_baselines": "blur"}),
    "blur-smooth-last": (None, {"keep_baselines": "blur", "map_prior": "smoothed"}),
    "delete-b10": (10, {"queries": "delete"}),
    "delete-smooth-last": (None, {"queries": "delete", "map_prior": "smoothed"}),
}
#: Weightings of the evidence maps, by name (``map_from`` mappings).
WEIGHTINGS: dict[str, dict[str, float]] = {
    "both": {"both": 1},
    "delete": {"delete": 1},
    "keep": {"keep": 1},
    "both + delete": {"both": 1, "delete": 1},
    "both + 3 delete": {"both": 1, "delete": 3},
    "both + 8 delete": {"both": 1, "delete": 8},
    "delete + keep": {"delete": 1, "keep": 1},
    "2 delete + keep": {"delete": 2, "keep": 1},
    "both + delete + keep": {"both": 1, "delete": 1, "keep": 1},
    "both + 3 delete + keep": {"both": 1, "delete": 3, "keep": 1},
}
N_STEPS = 32
#: Occlusion (window, stride) as fractions of the side, one per budget: 26, 50 and 101 calls
#: at 32, 128 and 224 pixels (in the families ``quality.occlusion_family`` draws from).
OCCLUSION_GRID = ((1 / 2, 1 / 8), (1 / 4, 1 / 8), (3 / 16, 3 / 32))


@dataclasses.dataclass
class Reference:
    """Occlusion's and RISE's means at one budget."""

    label: str
    deletion: float
    insertion: float


#: The window surrogate as the default preset had it when these weightings were measured
#: (keep queries on the baselines, no map check): ``map_from`` weighs that model's evidence.
WINDOWS = BORExSettings(surrogate="windows", keep_baselines=None, map_check=None)


def mean_of(scores: list[Q.Scores]) -> tuple[float, float]:
    """Mean deletion and insertion over the images of runs averaged per image."""
    mean = Q.mean_scores(scores)
    return float(mean.deletion.mean()), float(mean.insertion.mean())


def observed(options: dict[str, Any]) -> tuple[str, ...]:
    """The kinds of evidence that the search's queries observe."""
    made = NEEDS[options.get("queries", "both")]
    return tuple(name for name, needs in NEEDS.items() if needs <= made)


def references(task: Q.Task, seeds: range, only: list[int] | None) -> dict[int, list[Reference]]:
    """One Occlusion (window, stride) per budget of the quality benchmark and RISE with as
    many masks, per budget."""
    out = {}
    for frac_window, frac_stride in OCCLUSION_GRID:
        window, stride = round(task.side * frac_window), max(1, round(task.side * frac_stride))
        occlusion, calls = Q.occlusion(task, window, stride)
        budget = int(calls)
        if only and budget not in only:
            continue
        rise = [Q.measure(task, Q.rise(task, budget, seed)[0], N_STEPS) for seed in seeds]
        occluded = Q.measure(task, occlusion, N_STEPS)
        out[budget] = [
            Reference(f"Occlusion {window}/{stride}", *mean_of([occluded])),
            Reference(f"RISE-{budget}", *mean_of(rise)),
        ]
    return out


def evidence_maps(
    task: Q.Task, prior: Tensor, seed: int, n_iter: int, options: dict[str, Any]
) -> tuple[dict[str, Tensor], float]:
    """Every kind of evidence the search observes, from one BOREx run, and its calls."""
    details: dict[str, Any] = {}

    def run(model: Q.Counted) -> Tensor:
        settings = WINDOWS.replace(**options, map_from=observed(options))
        details["run"] = BOREx(model, prior=prior, settings=settings).attribute(
            task.images,
            target=task.target,
            seed=seed,
            n_iter=n_iter,
            internal_batch_size=256,
            return_details=True,
        )
        return details["run"].attributions

    _, calls = Q.counted(task, run)
    return details["run"].evidence_maps, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--photo-size", type=int, default=128, help="photo side in pixels")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per image (BOREx, RISE)")
    parser.add_argument("--n-images", type=int, default=0, help="first N images (0: all 72)")
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=None, help="budgets to run (26 50 101)"
    )
    parser.add_argument(
        "--configs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="settings"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.seeds < 1 or args.n_images < 0:
        parser.error("--seeds must be at least 1 and --n-images at least 0")
    warnings.filterwarnings("ignore", message="the baseline alone gets probability")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seeds = range(args.seeds)
    started = time.perf_counter()

    tasks: dict[int | None, tuple[Q.Task, tuple[Tensor, float]]] = {}
    for block in dict.fromkeys(SETTINGS[name][0] for name in args.configs):
        task = Q.photos_task(args.photo_size, 4, block)
        if task is None:
            return
        if args.n_images:
            images, target = task.images[: args.n_images], task.target[: args.n_images]
            task = dataclasses.replace(task, images=images, target=target)
        task = task.to(device)
        tasks[block] = (task, Q.gradcam(task))
    first = next(iter(tasks.values()))[0]
    refs = references(first, seeds, args.budgets)
    budgets = sorted(refs)

    rows: list[list[object]] = []
    for budget in budgets:
        for ref in refs[budget]:
            rows.append([ref.label, "", budget, ref.deletion, ref.insertion, ""])
    wins: dict[str, int] = {}
    for name in args.configs:
        block, options = SETTINGS[name]
        task, (cam, cam_calls) = tasks[block]
        weightings = {k: w for k, w in WEIGHTINGS.items() if set(w) <= set(observed(options))}
        runs: dict[str, dict[int, list[Q.Scores]]] = {k: {} for k in weightings}
        calls: dict[int, float] = {}
        for budget in budgets:
            n_iter = Q.borex_iterations(budget, cam_calls, WINDOWS.replace(**options))
            for seed in seeds:
                maps, used = evidence_maps(task, cam, seed, n_iter, options)
                calls[budget] = used + cam_calls
                for key, weights in weightings.items():
                    fused = rank_fusion([maps[n] for n in weights], list(weights.values()))
                    scores = Q.measure(task, cast(Tensor, fused), N_STEPS)
                    runs[key].setdefault(budget, []).append(scores)
        for key in weightings:
            for budget in budgets:
                deletion, insertion = mean_of(runs[key][budget])
                won = all(deletion < r.deletion and insertion > r.insertion for r in refs[budget])
                wins[f"{name}, {key}"] = wins.get(f"{name}, {key}", 0) + won
                rows.append(
                    [name, key, round(calls[budget]), deletion, insertion, "*" if won else ""]
                )
    title = (
        f"BOREx at equal model calls, every evidence weighting from one search (photos "
        f"{args.photo_size}x{args.photo_size}, {len(first.images)} images, {args.seeds} seeds; "
        f"{machine()}). *: beats Occlusion and RISE of its budget on both means."
    )
    header = ["setting", "map from", "calls", "deletion ↓", "insertion ↑", "wins"]
    print_table(title, header, rows)
    best = max(wins.values(), default=0)
    print(f"\nMost budgets won by one setting and weighting: {best} of {len(budgets)}")
    for key, count in wins.items():
        if count == best and best > 0:
            print(f"- {key}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
