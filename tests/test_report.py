"""Refinement report: paired tests find planted improvements and invent none."""

import io
import sys

import pytest
import torch
from captum.attr import Saliency
from matplotlib.figure import Figure
from scipy import stats
from torch import nn

from captum_borex.metrics.report import (
    HIGHER_IS_BETTER,
    RefinementReport,
    paired_comparison,
    refinement_report,
)
from captum_borex.synthetic import SHAPE_NAMES, _stamp, make_shapes


class TemplateModel(nn.Module):
    """A hand-built shape detector: zero-mean templates of the class shapes, max-pooled.

    It classifies ``make_shapes`` images without training; the distractor square (a flat
    patch) gives every zero-mean template no response, so the evidence is the object.
    """

    def __init__(self):
        super().__init__()
        stamps = torch.stack([_stamp(name, 7) for name in SHAPE_NAMES])
        kernels = stamps - stamps.mean((1, 2), keepdim=True)
        self.conv = nn.Conv2d(3, 3, 7, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(kernels[:, None].expand(-1, 3, -1, -1) / 3)

    def forward(self, x):
        return self.conv(x).amax((-2, -1))


@pytest.fixture(scope="module")
def shapes():
    images, labels, masks = make_shapes(20, seed=3)
    return TemplateModel().eval(), images, labels, masks


def test_template_model_solves_the_task(shapes):
    model, images, labels, _ = shapes
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).all()


@pytest.mark.parametrize("prior_kind", ["reversed", "random"])
def test_planted_improvement_is_detected(shapes, prior_kind):
    model, images, labels, masks = shapes
    truth = masks.float()
    if prior_kind == "reversed":
        prior = -truth
    else:
        prior = torch.rand(truth.shape, generator=torch.Generator().manual_seed(0))
    report = RefinementReport.from_maps(
        model, images, labels, prior, truth, masks, n_steps=32, tolerance=0
    )
    assert list(report.comparisons) == list(HIGHER_IS_BETTER)
    summary = report.to_dict()
    for name, row in summary.items():
        assert row["p_value"] < 0.01, name
        assert row["winner"] == "refined", name
        assert row["better"] == ("higher" if HIGHER_IS_BETTER[name] else "lower")
    assert summary["deletion"]["refined"] < summary["deletion"]["prior"]
    assert summary["deletion"]["rank_biserial"] < -0.9
    assert summary["insertion"]["refined"] > summary["insertion"]["prior"]
    assert summary["insertion"]["rank_biserial"] > 0.9
    assert summary["energy_pointing_game"]["refined"] == pytest.approx(1.0)
    assert summary["mean_recall"]["refined"] == pytest.approx(1.0)


def test_identical_maps_show_no_difference(shapes):
    model, images, labels, masks = shapes
    maps = masks.float() + torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    report = RefinementReport.from_maps(
        model, images, labels, maps, maps.clone(), masks, n_steps=16
    )
    for name, comparison in report.comparisons.items():
        assert comparison.p_value == 1.0, name
        assert comparison.rank_biserial == 0.0 and comparison.n_nonzero == 0, name
        assert comparison.mean_difference == 0.0, name
        assert comparison.winner() == "none", name


def test_a_planted_worsening_is_not_called_an_improvement(shapes):
    model, images, labels, masks = shapes
    report = RefinementReport.from_maps(
        model, images, labels, masks.float(), -masks.float(), n_steps=16
    )
    assert set(report.comparisons) == {"deletion", "insertion"}
    assert all(c.winner() == "prior" for c in report.comparisons.values())


def test_paired_comparison_known_values():
    prior = torch.zeros(16)
    refined = torch.arange(1.0, 17.0)
    result = paired_comparison(prior, refined, higher_is_better=True)
    assert result.p_value == pytest.approx(2 / 2**16)  # exact two-sided test
    assert result.rank_biserial == 1.0 and result.statistic == 0.0
    assert result.n_nonzero == 16 and result.mean_difference == pytest.approx(8.5)
    mixed = paired_comparison(torch.zeros(5), torch.tensor([1.0, -2.0, 3.0, 4.0, 0.0]), False)
    assert mixed.rank_biserial == pytest.approx((8 - 2) / 10)  # ranks 1, 2, 3, 4; zero dropped
    assert mixed.p_value == pytest.approx(stats.wilcoxon([1.0, -2.0, 3.0, 4.0]).pvalue)
    assert mixed.n_nonzero == 4
    tiny = paired_comparison(torch.ones(8), torch.ones(8) + 1e-9, True)
    assert tiny.p_value == 1.0  # float rounding is a tie
    with pytest.raises(ValueError, match="same length"):
        paired_comparison(torch.zeros(3), torch.zeros(4), True)


def test_outputs_table_dict_figure(shapes):
    model, images, labels, masks = shapes
    report = RefinementReport.from_maps(
        model,
        images[:8],
        labels[:8],
        -masks[:8].float(),
        masks[:8].float(),
        masks[:8],
        n_steps=8,
    )
    summary = report.to_dict()
    for row in summary.values():
        for key in ("prior", "refined", "mean_difference", "rank_biserial", "p_value"):
            assert type(row[key]) is float
        assert type(row["n_images"]) is int and row["n_images"] == 8
    text = str(report)
    assert "Wilcoxon" in text and "8 images" in text
    for name in HIGHER_IS_BETTER:
        assert name in text
    assert report.curves["deletion"]["refined"].scores.shape == (8, 9)
    assert report.prior_maps.shape == (8, 32, 32)
    fig = report.figure()
    assert isinstance(fig, Figure)
    assert sum(ax.get_visible() for ax in fig.axes) == len(HIGHER_IS_BETTER) + 1
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


def test_to_dataframe_without_pandas_says_so(shapes, monkeypatch):
    model, images, labels, masks = shapes
    report = RefinementReport.from_maps(
        model, images[:4], labels[:4], masks[:4].float(), masks[:4].float(), n_steps=4
    )
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        report.to_dataframe()


def test_to_dataframe(shapes):
    pd = pytest.importorskip("pandas")
    model, images, labels, masks = shapes
    report = RefinementReport.from_maps(
        model, images[:4], labels[:4], -masks[:4].float(), masks[:4].float(), n_steps=4
    )
    frame = report.to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["deletion", "insertion"]
    assert frame.loc["insertion", "better"] == "higher"


def test_bad_maps_and_masks(shapes):
    model, images, labels, masks = shapes
    maps = masks.float()
    with pytest.raises(ValueError, match="prior_maps has shape"):
        RefinementReport.from_maps(model, images, labels, maps[:, :16], maps)
    with pytest.raises(ValueError, match="refined_maps has shape"):
        RefinementReport.from_maps(model, images, labels, maps, maps[:5])
    with pytest.raises(ValueError, match="masks of shape"):
        RefinementReport.from_maps(model, images, labels, maps, maps, masks[:, :16], n_steps=2)
    with pytest.raises(ValueError, match="alpha must be"):
        RefinementReport.from_maps(model, images, labels, maps, maps, alpha=1.5)


def test_refinement_report_end_to_end(shapes):
    model, images, labels, masks = shapes
    x, y, m = images[:4], labels[:4], masks[:4, None]  # masks as (N, 1, H, W)
    report = refinement_report(
        model, Saliency(model), x, y, masks=m, n_iter=4, seed=0, measure_kwargs={"n_steps": 10}
    )
    assert report.n_images == 4 and list(report.comparisons) == list(HIGHER_IS_BETTER)
    expected_prior = Saliency(model).attribute(x.clone(), target=y).sum(1)
    torch.testing.assert_close(report.prior_maps, expected_prior)
    assert report.refined_maps.shape == (4, 32, 32)
    assert torch.isfinite(report.refined_maps).all()
    assert not torch.allclose(report.refined_maps, report.prior_maps)
    assert all(0 <= row["p_value"] <= 1 for row in report.to_dict().values())
    assert not x.requires_grad and model.conv.weight.grad is None
    with pytest.raises(ValueError, match="unknown BOREx preset"):
        refinement_report(model, None, x, y, settings="fastest")
