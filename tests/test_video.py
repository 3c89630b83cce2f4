"""Clips (N, C, T, H, W): spatio-temporal windows, video priors, measures and pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion
from PIL import Image

from captum_borex import RISE, BOREx, BORExSettings
from captum_borex.metrics import (
    deletion_auc,
    energy_pointing_game,
    frame_profile,
    insertion_auc,
    pointing_game,
)

FAST = dict(n_iter=6, seed=0)


def test_refining_a_weak_prior_improves_clip_explanations(cnn3d, clips_val):
    clips, labels, masks = clips_val
    rise = RISE(cnn3d)
    weak = rise.attribute(clips, target=labels, n_masks=30, seed=0)
    details = BOREx(cnn3d, prior=rise).attribute(
        clips, target=labels, seed=0, prior_kwargs={"n_masks": 30, "seed": 0}, return_details=True
    )
    refined = details.attributions
    assert refined.shape == clips.shape
    assert details.uncertainty.shape == (16, 8, 24, 24) and (details.uncertainty >= 0).all()
    assert details.centres.shape == (16, 50, 3)
    for measure, better in ((deletion_auc, -1), (insertion_auc, 1)):
        before = measure(cnn3d, clips, weak, target=labels).mean()
        after = measure(cnn3d, clips, refined, target=labels).mean()
        assert better * (after - before) > 0.02, (measure.__name__, before, after)
    hits_before = pointing_game(weak, masks, tolerance=1).float().mean()
    hits_after = pointing_game(refined, masks, tolerance=1).float().mean()
    assert hits_after > hits_before, (hits_before, hits_after)
    # The object shows in 3 of 8 frames: a flat profile puts 3/8 of the mass there. The
    # field's cells span 2 frames each (4 along time), which caps how sharp the profile gets.
    true_frames = masks.any(-1).any(-1)
    share_before = (frame_profile(weak) * true_frames).sum(1).mean()
    share_after = (frame_profile(refined) * true_frames).sum(1).mean()
    assert share_after > share_before + 0.015, (share_before, share_after)


PRIORS = {
    "layer_gradcam_conv3d": (lambda m: LayerGradCam(m, m.features[-2]), {}),
    "integrated_gradients": (lambda m: IntegratedGradients(m), {"n_steps": 4}),
    "occlusion_3d": (
        lambda m: Occlusion(m),
        {"sliding_window_shapes": (3, 2, 6, 6), "strides": (3, 2, 6, 6)},
    ),
    "rise_clips": (lambda m: RISE(m), {"n_masks": 20, "cells": (2, 4, 4)}),
}


@pytest.mark.parametrize("name", list(PRIORS))
def test_video_priors(cnn3d, clips_val, name):
    clips, labels, _ = clips_val
    x, y = clips[:2], labels[:2]
    make, kwargs = PRIORS[name]
    details = BOREx(cnn3d, prior=make(cnn3d)).attribute(
        x, target=y, prior_kwargs=kwargs, return_details=True, **FAST
    )
    assert details.attributions.shape == x.shape
    assert details.prior.shape == (2, 8, 24, 24)
    assert details.prior.abs().mean(dim=(1, 2, 3)).allclose(torch.full((2,), 0.1), atol=1e-4)


def test_clip_windows_and_defaults(cnn3d, clips_val):
    clips, labels, _ = clips_val
    short = BORExSettings(temporal_window_sizes=(1, 3))
    details = BOREx(cnn3d, settings=short).attribute(
        clips[:2], target=labels[:2], return_details=True, **FAST
    )
    durations = details.half_sizes[..., 0].unique().tolist()
    assert set(durations) <= {1, 3}
    assert (details.half_sizes[..., 1] == details.half_sizes[..., 2]).all()
    alone = BOREx(cnn3d, settings=short).attribute(clips[1:2], target=labels[1:2], **FAST)
    torch.testing.assert_close(details.attributions[1:2], alone, atol=1e-4, rtol=1e-4)
    on_baselines = BOREx(cnn3d, settings=short.replace(keep_baselines=None)).attribute(
        clips[:2], target=labels[:2], **FAST
    )
    assert on_baselines.shape == clips[:2].shape and torch.isfinite(on_baselines).all()
    assert not torch.allclose(on_baselines, details.attributions)


@pytest.mark.parametrize(
    "case, message",
    [
        ("prior_shape", "prior tensor has shape"),
        ("too_long", "temporal_window_sizes: half-size 5 gives windows of 10 frames"),
        ("too_wide", "window_sizes: half-size 13"),
        ("nan", "inputs contains NaN"),
        ("target", "target 5 is out of range"),
        ("six_d", "inputs must be a batch"),
        ("stride", "acquisition_stride needs one value or one per axis"),
        ("lengthscale", r"lengthscale needs 5 values \(frames, rows, columns, duration, size\)"),
    ],
)
def test_bad_clip_input(cnn3d, clips_val, case, message):
    clips, labels, _ = clips_val
    x, y = clips[:2], labels[:2]
    borex = BOREx(cnn3d)
    nan = x.clone()
    nan[0, 0, 3, 4, 5] = float("nan")
    call = {
        "prior_shape": lambda: BOREx(cnn3d, prior=torch.rand(2, 8, 24, 25)).attribute(x, target=y),
        "too_long": lambda: BOREx(
            cnn3d, settings=BORExSettings(temporal_window_sizes=(2, 5))
        ).attribute(x, target=y),
        "too_wide": lambda: borex.attribute(x, target=y, window_sizes=(3, 13)),
        "nan": lambda: borex.attribute(nan, target=y),
        "target": lambda: borex.attribute(x, target=5),
        "six_d": lambda: borex.attribute(x[:, :, None], target=y),
        "stride": lambda: BOREx(cnn3d, settings=BORExSettings(acquisition_stride=(1, 2))).attribute(
            x, target=y
        ),
        "lengthscale": lambda: BOREx(
            cnn3d, settings=BORExSettings(surrogate="windows", lengthscale=(12.0, 12.0, 10.0))
        ).attribute(x, target=y),
    }[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_temporal_sizes_are_rejected_for_images(cnn, shapes_val):
    images, labels, _ = shapes_val
    with pytest.raises(ValueError, match="temporal_window_sizes applies to clips"):
        BOREx(cnn, settings=BORExSettings(temporal_window_sizes=(1,))).attribute(
            images[:1], target=labels[:1]
        )


def test_clip_measures_known_answers():
    masks = torch.zeros(2, 4, 6, 6, dtype=torch.bool)
    masks[:, 1:3, 2:4, 2:4] = True
    maps = torch.zeros(2, 4, 6, 6)
    maps[0, 2, 3, 3] = 1.0  # peak inside the object, in a true frame
    maps[1, 0, 3, 3] = 1.0  # right place, wrong frame
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False]
    assert pointing_game(maps, masks, tolerance=1).tolist() == [True, True]
    torch.testing.assert_close(energy_pointing_game(maps, masks), torch.tensor([1.0, 0.0]))
    profile = frame_profile(maps[:, None].expand(-1, 3, -1, -1, -1) + 5.0)
    torch.testing.assert_close(profile[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(frame_profile(torch.zeros(1, 4, 6, 6)), torch.full((1, 4), 0.25))
    clipped = frame_profile(maps - 0.5, relative_to_minimum=False)
    torch.testing.assert_close(clipped[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_clip_deletion_and_insertion_run_over_voxels(cnn3d, clips_val):
    clips, labels, masks = clips_val
    truth = masks[:4].float() + 1e-3 * torch.rand(4, 8, 24, 24)
    reverse = -truth
    good = deletion_auc(cnn3d, clips[:4], truth, target=labels[:4], n_steps=20)
    bad = deletion_auc(cnn3d, clips[:4], reverse, target=labels[:4], n_steps=20)
    assert good.shape == (4,) and good.mean() < bad.mean() - 0.1
    ins = insertion_auc(cnn3d, clips[:4], truth, target=labels[:4], n_steps=20)
    assert ((ins >= 0) & (ins <= 1)).all()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_callback_logs_clips_as_frame_strips(tmp_path, clips_val):
    from torch.utils.data import DataLoader, TensorDataset

    from captum_borex.lightning import BORExCallback
    from captum_borex.lightning._compat import pl
    from captum_borex.synthetic import SmallCNN3d

    class ClipModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = SmallCNN3d(width=4)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    clips, labels, _ = clips_val
    loader = DataLoader(TensorDataset(clips[:8], labels[:8]), batch_size=4)
    callback = BORExCallback(num_samples=2, n_iter=3, window_sizes=[3, 5])
    logger = pl.loggers.CSVLogger(str(tmp_path), name="clips")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ClipModule(), loader, loader)
    png = Path(trainer.log_dir) / "borex" / "epoch_000.png"
    width, height = Image.open(png).size
    assert width > height  # 8 frames side by side, 3 rows (input, refined, uncertainty) per clip
