"""The equal-budget verdict of ``benchmarks/quality.py``: what counts as a win, and the
check of the default against its prior (the pointing game included where there are masks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import quality  # noqa: E402


def row(
    name: str, deletion: list[float], insertion: list[float], pointing: list[float] | None = None
) -> quality.Row:
    scores = quality.Scores(
        deletion=torch.tensor(deletion, dtype=torch.float64),
        insertion=torch.tensor(insertion, dtype=torch.float64),
        pointing=None if pointing is None else torch.tensor(pointing, dtype=torch.float64),
        entropy=torch.zeros(len(deletion), dtype=torch.float64),
    )
    return quality.Row(name, "budget", 26.0, scores)


N = 12
BASE_DEL = [0.2 + 0.01 * i for i in range(N)]
BASE_INS = [0.6 + 0.01 * i for i in range(N)]


def shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in values]


def budget_rows(ours: quality.Row, prior: quality.Row) -> quality.BudgetRows:
    occlusions = [
        row("Occlusion 12/6", BASE_DEL, shifted(BASE_INS, -0.05)),
        row("Occlusion 8/4", shifted(BASE_DEL, 0.05), BASE_INS),
    ]
    rise = row("RISE-25", shifted(BASE_DEL, 0.1), shifted(BASE_INS, -0.1))
    return quality.BudgetRows(26, [ours], occlusions, rise, prior)


def test_a_win_needs_both_means_better_than_the_best_occlusion_per_measure() -> None:
    prior = row("Grad-CAM", BASE_DEL, BASE_INS)
    better = row("BOREx", shifted(BASE_DEL, -0.02), shifted(BASE_INS, 0.02))
    lines = quality.matches("toy", budget_rows(better, prior))
    assert [m.competitor for m in lines] == ["best Occlusion", "RISE"]
    occlusion = lines[0]
    assert occlusion.rivals["deletion"].name == "Occlusion 12/6"
    assert occlusion.rivals["insertion"].name == "Occlusion 8/4"
    assert all(m.win for m in lines)

    # Better insertion but worse deletion than the best Occlusion: no win against it.
    mixed = row("BOREx", shifted(BASE_DEL, 0.02), shifted(BASE_INS, 0.02))
    lines = quality.matches("toy", budget_rows(mixed, prior))
    assert [m.win for m in lines] == [False, True]


def test_the_prior_check_reads_the_pointing_game_where_there_are_masks() -> None:
    prior = row("Grad-CAM", BASE_DEL, BASE_INS, pointing=[1.0] * N)
    # As good on deletion and insertion, but its maximum misses the object on every image.
    missing = row("BOREx", shifted(BASE_DEL, -0.01), shifted(BASE_INS, 0.01), [0.0] * N)
    rows = budget_rows(missing, prior)
    assert quality.prior_measures(missing) == ("deletion", "insertion", "pointing")
    assert quality.worse_than_prior(rows)
    assert "+/+/-" in quality.against_prior(rows)

    no_masks = row("BOREx", shifted(BASE_DEL, -0.01), shifted(BASE_INS, 0.01))
    rows = budget_rows(no_masks, row("Grad-CAM", BASE_DEL, BASE_INS))
    assert quality.prior_measures(no_masks) == ("deletion", "insertion")
    assert not quality.worse_than_prior(rows)


def test_budgets_and_variant_window_sizes_from_the_command_line(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quality.py", "--budgets", "50", "26", "50"])
    assert quality.configured(quality.parse_args()).budgets == (26, 50)
    monkeypatch.setattr(sys, "argv", ["quality.py"])
    assert quality.configured(quality.parse_args()).budgets == quality.FULL.budgets
    monkeypatch.setattr(sys, "argv", ["quality.py", "--budgets", "12"])
    with pytest.raises(SystemExit) as exit_:
        quality.parse_args()
    assert exit_.value.code == 2
    up = quality.Variant("Grad-CAM", "up", half_sizes=(45, 60, 75, 90))
    assert up.window_sizes(224) == [45, 60, 75, 90]
    assert up.window_sizes(32) == [6, 9, 11, 13]
    assert quality.Variant("Grad-CAM", "default").window_sizes(128) is None


def test_the_photos_model_from_the_command_line(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["quality.py"])
    assert quality.configured(quality.parse_args()).photo_model == "lite0"
    monkeypatch.setattr(sys, "argv", ["quality.py", "--photo-model", "lite2"])
    assert quality.configured(quality.parse_args()).photo_model == "lite2"
    monkeypatch.setattr(sys, "argv", ["quality.py", "--photo-model", "resnet50"])
    with pytest.raises(SystemExit) as exit_:
        quality.parse_args()
    assert exit_.value.code == 2
    with pytest.raises(ValueError, match="name must be one of lite0, lite1, lite2.*got 'resnet50'"):
        quality.load_model("resnet50")


def test_a_held_out_model_is_named_in_the_tables() -> None:
    images = torch.zeros(2, 3, 16, 16)
    task = quality.Task("photos", torch.nn.Identity(), images, torch.zeros(2), None, None)
    assert task.label == "photos 16px"
    task.model_name = "EfficientNet-Lite2"
    assert task.label == "photos 16px EfficientNet-Lite2"
    assert task.to(torch.device("cpu")).label == task.label
