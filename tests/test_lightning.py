"""BORExCallback and ExplanationWriter with real Lightning Trainers and loggers (CPU only)."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from captum_borex.lightning import BORExCallback, ExplanationWriter, load_explanations
from captum_borex.lightning._compat import pl
from captum_borex.lightning._explain import default_batch_to_inputs, split_batch
from captum_borex.lightning.writer import META_FILE

sys.path.insert(0, str(Path(__file__).parent))
from ddp_predict import BOREX_SETTINGS, ShapesModule, gradcam, shapes_loader  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCALARS = (
    "borex/deletion_auc_prior",
    "borex/deletion_auc_refined",
    "borex/insertion_auc_prior",
    "borex/insertion_auc_refined",
)
DDP_SCRIPT = Path(__file__).parent / "ddp_predict.py"

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def small_callback(**kwargs: object) -> BORExCallback:
    options = {
        "prior": gradcam,
        "num_samples": 4,
        "metric_steps": 8,
        **BOREX_SETTINGS,
        **kwargs,
    }
    return BORExCallback(**options)


def make_trainer(root: Path, callbacks: list, logger: object = False, **kwargs: object):
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 3,
        "logger": logger,
        "callbacks": callbacks,
        "default_root_dir": str(root),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 1,
        **kwargs,
    }
    return pl.Trainer(**options)


def fit(trainer, module=None, val_seed: int = 1) -> ShapesModule:
    module = module or ShapesModule()
    trainer.fit(module, shapes_loader(48, seed=0, shuffle=True), shapes_loader(16, seed=val_seed))
    return module


def assert_png(path: Path) -> None:
    assert path.is_file(), f"missing {path}"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def assert_auc(value: float) -> None:
    assert math.isfinite(value) and 0.0 <= value <= 1.0, value


# Loggers


def test_fit_logs_images_and_scalars_to_tensorboard_and_csv(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard = pl.loggers.TensorBoardLogger(str(tmp_path / "tb"), name="run")
    csv_logger = pl.loggers.CSVLogger(str(tmp_path / "csv"), name="run")
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path, [small_callback()], logger=[tensorboard, csv_logger])
    fit(trainer)

    # PNGs for the CSV logger, under trainer.log_dir (the first logger's directory).
    pngs = sorted((Path(trainer.log_dir) / "borex").glob("*.png"))
    assert [p.name for p in pngs] == ["epoch_000.png", "epoch_001.png"]  # no sanity-check one
    for path in pngs:
        assert_png(path)

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = events.Images("borex/explanations")
    assert [e.step for e in images] == [3, 6]  # one per epoch, at the global step
    assert images[0].height > 100 and images[0].width > 100
    for name in SCALARS:
        values = [e.value for e in events.Scalars(name)]
        assert len(values) == 2, name
        for value in values:
            assert_auc(value)

    with open(Path(csv_logger.log_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in SCALARS:
        values = [float(row[name]) for row in rows if row.get(name)]
        assert len(values) == 2, name
        for value in values:
            assert_auc(value)


def test_fit_logs_to_wandb_offline_and_mlflow_file_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb", reason="the W&B logger test needs wandb")
    pytest.importorskip("mlflow", reason="the MLflow logger test needs mlflow (or mlflow-skinny)")
    from mlflow import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    # MLflow >= 3.7 refuses the file store unless asked for explicitly.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking_uri = f"file:{tmp_path / 'mlruns'}"
    wandb_logger = pl.loggers.WandbLogger(offline=True, save_dir=str(tmp_path / "wandb"))
    mlflow_logger = pl.loggers.MLFlowLogger(experiment_name="borex", tracking_uri=tracking_uri)
    # A flat prior and the model's predictions as targets; explain every second epoch only.
    callback = small_callback(prior=None, target="prediction", every_n_epochs=2)
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp_path, [callback], logger=[wandb_logger, mlflow_logger])
    try:
        fit(trainer)
        summary = dict(wandb_logger.experiment.summary)
        run_dir = Path(wandb_logger.experiment.dir)
    finally:
        wandb.finish()

    refined = ("borex/deletion_auc_refined", "borex/insertion_auc_refined")
    for name in refined:
        assert_auc(summary[name])
    assert "borex/deletion_auc_prior" not in summary  # prior=None: nothing to compare
    images = sorted(run_dir.glob("media/images/borex/explanations*.png"))
    assert len(images) == 1  # epoch 1 only (every_n_epochs=2)
    assert_png(images[0])

    client = MlflowClient(tracking_uri=tracking_uri)
    for name in refined:
        history = client.get_metric_history(mlflow_logger.run_id, name)
        assert len(history) == 1, name
        assert_auc(history[0].value)
    artifacts = [a.path for a in client.list_artifacts(mlflow_logger.run_id, "borex/explanations")]
    assert artifacts == ["borex/explanations/epoch_001.png"]
    local = Path(client.download_artifacts(mlflow_logger.run_id, artifacts[0], str(tmp_path)))
    assert_png(local)
    # Both loggers show images, so no PNG files were written besides them.
    assert not list(tmp_path.glob("**/borex/epoch_*.png"))


# Training is not disturbed


@pytest.fixture
def restore_torch_flags(monkeypatch: pytest.MonkeyPatch):
    """Trainer(deterministic=True) sets process-wide flags: put them back afterwards."""
    # setenv first, so that monkeypatch also undoes Lightning's setting of the variable.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


@pytest.mark.usefixtures("restore_torch_flags")
def test_training_is_bit_identical_with_and_without_the_callback(tmp_path: Path) -> None:
    def train(callbacks: list) -> dict[str, torch.Tensor]:
        pl.seed_everything(0, verbose=False)
        module = ShapesModule(norm_and_dropout=True)
        trainer = make_trainer(tmp_path, callbacks, deterministic=True)
        fit(trainer, module)
        return module.state_dict()

    callback = small_callback(save_png=False)
    with_callback = train([callback])
    without = train([])
    assert callback.last_explanation is not None  # it did run, at the end of both epochs
    assert with_callback.keys() == without.keys()
    assert any("running_mean" in key for key in without)  # BatchNorm buffers are compared
    for key, value in without.items():
        assert torch.equal(with_callback[key], value), key


class StateProbe(pl.Callback):
    """Around BORExCallback: sets odd modes and a .grad before it, checks them after it."""

    def __init__(self, before: bool, shared: dict) -> None:
        self.before, self.shared = before, shared

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        conv = pl_module.model.features[0]
        if self.before:
            conv.train()  # a submodule in train mode while the rest is in eval mode
            conv.weight.grad = self.shared["grad"]
            self.shared["modes"] = [m.training for m in pl_module.modules()]
        else:
            self.shared["modes_after"] = [m.training for m in pl_module.modules()]
            self.shared["grad_after"] = conv.weight.grad
            conv.weight.grad = None
            conv.eval()


def test_validate_and_test_with_gradient_prior_under_inference_mode(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    callback = small_callback()
    shared = {"grad": torch.full((4, 3, 3, 3), 7.0)}
    probes = [StateProbe(True, shared), callback, StateProbe(False, shared)]
    trainer = make_trainer(tmp_path, probes, logger=pl.loggers.CSVLogger(str(tmp_path)))
    assert trainer.validate_loop.inference_mode  # the default
    module = ShapesModule()

    (validated,) = trainer.validate(module, shapes_loader(16, seed=1))
    for name in SCALARS:
        assert_auc(validated[name])
    prior = callback.last_explanation.prior
    assert prior.abs().sum() > 0  # Grad-CAM ran (a failed prior would have raised)
    assert_png(Path(trainer.log_dir) / "borex" / "epoch_000.png")
    # Modes of every submodule and .grad (object and values) are as they were before it.
    assert shared["modes_after"] == shared["modes"] and any(shared["modes"])
    assert shared["grad_after"] is shared["grad"]
    assert torch.equal(shared["grad"], torch.full((4, 3, 3, 3), 7.0))

    (tested,) = trainer.test(module, shapes_loader(16, seed=2))
    for name in SCALARS:
        assert_auc(tested[name.replace("borex/", "borex_test/")])
    assert_png(Path(trainer.log_dir) / "borex" / "test_epoch_000.png")


def test_resumed_run_tracks_the_same_samples(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    first = small_callback(log_metrics=False, save_png=False)
    trainer = make_trainer(tmp_path, [first], max_epochs=1)
    module = fit(trainer, val_seed=1)
    checkpoint = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(checkpoint)
    tracked = first.state_dict()
    assert tracked["inputs"].shape == (4, 3, 32, 32)

    # Resume with a fresh callback and different validation data: the same images stay.
    second = small_callback(log_metrics=False, save_png=False)
    trainer = make_trainer(tmp_path, [second], max_epochs=2)
    trainer.fit(
        module,
        shapes_loader(48, seed=0, shuffle=True),
        shapes_loader(16, seed=7),
        ckpt_path=str(checkpoint),
    )
    assert torch.equal(second.state_dict()["inputs"], tracked["inputs"])
    assert torch.equal(second.state_dict()["labels"], tracked["labels"])
    other = next(iter(shapes_loader(16, seed=7)))[0][:4]
    assert not torch.equal(second.state_dict()["inputs"], other)


# Explaining datasets with trainer.predict


def predict(output_dir: Path, n: int = 13, **kwargs: object) -> ExplanationWriter:
    writer = ExplanationWriter(output_dir, prior=gradcam, **{**BOREX_SETTINGS, **kwargs})
    pl.seed_everything(0, verbose=False)
    trainer = make_trainer(output_dir.parent, [writer])
    trainer.predict(
        ShapesModule(), dataloaders=shapes_loader(n, seed=3, batch_size=4), return_predictions=False
    )
    return writer


@pytest.fixture(scope="module")
def single_device_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Explanations of 13 images on one device (batches of 4: 4 shards)."""
    out = tmp_path_factory.mktemp("single") / "explanations"
    writer = predict(out)
    assert len(writer.written) == 4 and not writer.skipped
    return out


def test_ddp_fit_and_predict_on_two_processes(tmp_path: Path, single_device_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DDP_SCRIPT), str(tmp_path), "--devices", "2", "--n", "13"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # load_explanations right after trainer.predict sees every index on every rank.
    for name in ("lightning_sampler", "padded_sampler"):
        for rank in (0, 1):
            assert f"{name}, rank {rank}: wrote 2 shards, skipped 0, loaded 13 indices" in (
                result.stderr
            ), result.stderr[-3000:]
    # DDP training with the callback: no hang, one figure (from rank zero), scalars logged.
    run_dir = tmp_path / "fit" / "run" / "version_0"
    assert [p.name for p in (tmp_path / "fit").glob("**/*.png")] == ["epoch_000.png"]
    assert_png(run_dir / "borex" / "epoch_000.png")
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in SCALARS:
        values = [float(row[name]) for row in rows if row.get(name)]
        assert len(values) == 1, name
        assert_auc(values[0])

    single_indices, single_maps = load_explanations(single_device_dir)
    labels = next(iter(shapes_loader(13, seed=3, batch_size=13)))[1]
    # 13 samples on 2 ranks: Lightning's predict sampler splits 7 + 6; a user's
    # DistributedSampler pads to 7 + 7 with a repeated sample, which must be dropped.
    for name, n_raw in (("lightning_sampler", 13), ("padded_sampler", 14)):
        out = tmp_path / name
        shards = sorted(p.name for p in out.glob("shard-*.pt"))
        assert shards == [
            f"shard-dl0-rank{rank:03d}-batch{batch:06d}.pt" for rank in (0, 1) for batch in (0, 1)
        ]
        raw = torch.cat([torch.load(out / s, weights_only=True)["indices"] for s in shards])
        assert len(raw) == n_raw, name

        indices, maps = load_explanations(out)
        assert torch.equal(indices, torch.arange(13)), name
        assert maps.shape == (13, 32, 32) and torch.isfinite(maps).all()
        # The maps of one device: an image's map depends neither on its batch nor its rank.
        assert torch.equal(single_indices, indices)
        torch.testing.assert_close(maps, single_maps, atol=1e-5, rtol=1e-4)
        _, targets = load_explanations(out, field="targets")
        assert torch.equal(targets, labels)


def test_predict_resume_recomputes_only_the_missing_shard(
    tmp_path: Path, single_device_dir: Path
) -> None:
    out = tmp_path / "explanations"
    shutil.copytree(single_device_dir, out)
    shards = sorted(out.glob("shard-*.pt"))
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    deleted = shards[2]
    deleted.unlink()

    writer = predict(out)
    assert [p.name for p in writer.written] == [deleted.name]
    assert sorted(p.name for p in writer.skipped) == sorted(set(before) - {deleted.name})
    for path in shards:
        if path != deleted:
            assert path.stat().st_mtime_ns == before[path.name]  # untouched
    indices, maps = load_explanations(out)
    _, expected = load_explanations(single_device_dir)
    assert torch.equal(indices, torch.arange(13))
    torch.testing.assert_close(maps, expected, atol=0, rtol=0)

    # Other settings in the same directory are refused rather than mixed in.
    with pytest.raises(ValueError, match="other settings"):
        predict(out, n_iter=5)


def test_a_directory_written_before_the_map_sources_were_recorded_is_refused(
    tmp_path: Path,
) -> None:
    from captum_borex.lightning.writer import _mismatch

    writer = ExplanationWriter(tmp_path / "out", prior=gradcam)
    now = {**writer.recorded_settings(), "model_weights": "w", "prior_attribution": None}
    assert now["map_sources"] == {"both": 1.0, "delete": 1.0, "keep": 1.0, "prior": 1.0}
    without_prior = ExplanationWriter(tmp_path / "out").recorded_settings()
    assert "prior" not in without_prior["map_sources"]
    before = {k: v for k, v in now.items() if k != "map_sources"}
    assert "map_sources" in _mismatch(before, now)
    assert _mismatch(now, now) == ""


# Arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prior": "gradcam"}, TypeError, "prior must be None or a callable"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, TypeError, "num_samples"),
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs"),
        ({"n_iter": 0}, ValueError, "n_iter"),
        ({"window_sizes": 4}, TypeError, "window_sizes"),
        ({"window_sizes": (0, 4)}, ValueError, "window_sizes"),
        ({"target": "labels"}, ValueError, "target must be one of"),
        ({"log_metrics": "yes"}, TypeError, "log_metrics"),
        ({"metric_steps": 0}, ValueError, "metric_steps"),
        ({"save_png": 1}, TypeError, "save_png"),
        ({"batch_to_inputs": 3}, TypeError, "batch_to_inputs"),
        ({"settings": "fastest"}, ValueError, "unknown BOREx preset 'fastest'"),
        ({"settings": {"kappa": 1.0}}, TypeError, "settings must be a preset name"),
        ({"prior_kwargs": [1]}, TypeError, "prior_kwargs must be a dict"),
        ({"baselines": float("nan")}, ValueError, "baselines must be a finite number"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_callback_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        BORExCallback(**kwargs)


def test_callback_prior_hint_for_an_attribution_instance() -> None:
    from captum.attr import Saliency

    with pytest.raises(TypeError, match="wrap it: prior=lambda module"):
        BORExCallback(prior=Saliency(ShapesModule()))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output_dir": 3}, TypeError, "output_dir must be a path"),
        ({"prior": 1}, TypeError, "prior must be None or a callable"),
        ({"target": "class"}, ValueError, "target must be one of"),
        ({"kapa": 1.0}, TypeError, "unexpected keyword argument 'kapa'"),
        ({"settings": "fastest"}, ValueError, "unknown BOREx preset 'fastest'"),
        ({"window_sizes": (0, 4)}, ValueError, "window_sizes"),
        ({"n_iter": 0}, ValueError, "n_iter"),
        ({"seed": -2}, ValueError, "seed"),
    ],
)
def test_writer_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict, error: type, match: str
) -> None:
    kwargs = {"output_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=match):
        ExplanationWriter(**kwargs)


def test_batches_that_do_not_fit_raise_clear_errors(tmp_path: Path) -> None:
    images = torch.rand(4, 3, 8, 8)
    with pytest.raises(TypeError, match="pass batch_to_inputs"):
        split_batch(default_batch_to_inputs, {"image": images})
    with pytest.raises(ValueError, match="one integer class index per input"):
        split_batch(lambda b: b, (images, torch.rand(4, 3)))
    with pytest.raises(TypeError, match="must return a pair"):
        split_batch(lambda b: images, images)
    with pytest.raises(FileNotFoundError, match="no explanation shards"):
        load_explanations(tmp_path)
    with pytest.raises(ValueError, match="field must be one of"):
        load_explanations(tmp_path, field="saliency")
    assert not (tmp_path / META_FILE).exists()


def test_callbacks_fit_trainers_of_both_namespaces(tmp_path: Path) -> None:
    lightning_pytorch = pytest.importorskip(
        "lightning.pytorch", reason="needs both the lightning and pytorch-lightning packages"
    )
    import pytorch_lightning

    for namespace in (lightning_pytorch, pytorch_lightning):
        assert isinstance(small_callback(), namespace.Callback)
        writer = ExplanationWriter(tmp_path, prior=gradcam)
        assert isinstance(writer, namespace.callbacks.BasePredictionWriter)


def test_explain_passes_each_warning_on_once_per_process():
    from captum_borex.lightning import _explain

    message = warnings.WarningMessage(UserWarning("same advice"), UserWarning, "f.py", 1)
    _explain._REPORTED.discard((UserWarning, "same advice"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _explain._warn_once(message)
        _explain._warn_once(message)
    assert [str(w.message) for w in caught] == ["same advice"]
