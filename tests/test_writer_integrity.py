"""ExplanationWriter never reuses or mixes stale maps: weights, prior, data, shards, runs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from captum.attr import LayerGradCam

from captum_borex.lightning import ExplanationWriter, load_explanations
from captum_borex.lightning._compat import pl
from captum_borex.lightning.writer import DONE_FILE

sys.path.insert(0, str(Path(__file__).parent))
from ddp_predict import BOREX_SETTINGS, ShapesModule, gradcam, shapes_loader  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def module_of(seed: int = 0) -> ShapesModule:
    pl.seed_everything(seed, verbose=False)
    return ShapesModule()


def run(
    out: Path, module: ShapesModule | None = None, data_seed: int = 3, n: int = 13, **kwargs
) -> ExplanationWriter:
    """Explain ``n`` images (batches of 4) into ``out`` on one CPU device."""
    writer = ExplanationWriter(out, **{"prior": gradcam, **BOREX_SETTINGS, **kwargs})
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[writer],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loader = shapes_loader(n, seed=data_seed, batch_size=4)
    trainer.predict(module or module_of(), dataloaders=loader, return_predictions=False)
    return writer


@pytest.fixture(scope="module")
def data_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("a") / "explanations"
    assert len(run(out).written) == 4
    return out


@pytest.fixture(scope="module")
def data_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "explanations"
    assert len(run(out, data_seed=4).written) == 4
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "explanations"
    shutil.copytree(folder, out)
    return out


def test_retrained_weights_are_refused(data_a: Path, tmp_path: Path) -> None:
    out = copy_of(data_a, tmp_path)
    with pytest.raises(ValueError, match=r"explanations holds .* other model weights"):
        run(out, module=module_of(seed=1))


def test_another_prior_is_refused_even_as_a_lambda(data_a: Path, tmp_path: Path) -> None:
    out = copy_of(data_a, tmp_path / "one")
    # Two lambdas share the name '<lambda>': their source tells them apart.
    with pytest.raises(ValueError, match="another prior"):
        run(out, prior=lambda m: LayerGradCam(m, m.model.features[3]))
    # The same function under a user-given name, and the same factory building the
    # attribution on another layer (the layer path is recorded).
    with pytest.raises(ValueError, match="another prior"):
        run(out, prior_name="gradcam v2")
    out = tmp_path / "two"
    run(out, prior=lambda m: LayerGradCam(m, m.model.features[layer]), prior_name="cam")
    meta = json.loads((out / "explanations.json").read_text())
    assert meta["prior"] == "cam"
    assert meta["prior_attribution"]["layer"] == ["model.features.6"]
    with pytest.raises(ValueError, match=r"another prior.*model\.features\.3"):
        run(out, prior=lambda m: LayerGradCam(m, m.model.features[3]), prior_name="cam")


#: The layer of the named-prior lambda above, read when it runs.
layer = 6


def test_other_data_of_the_same_length_is_recomputed(
    data_a: Path, data_b: Path, tmp_path: Path
) -> None:
    out = copy_of(data_a, tmp_path)
    writer = run(out, data_seed=4)
    assert len(writer.written) == 4 and not writer.skipped
    _, maps = load_explanations(out)
    _, expected = load_explanations(data_b)
    torch.testing.assert_close(maps, expected, atol=0, rtol=0)


def test_a_crash_on_data_a_resumed_on_data_b_gives_only_b(
    data_a: Path, data_b: Path, tmp_path: Path
) -> None:
    out = copy_of(data_a, tmp_path)
    (out / DONE_FILE.format(rank=0)).unlink()  # the run on A never finished
    (out / "shard-dl0-rank000-batch000003.pt").unlink()
    writer = run(out, data_seed=4)
    assert len(writer.written) == 4 and not writer.skipped
    _, maps = load_explanations(out)
    _, expected = load_explanations(data_b)
    torch.testing.assert_close(maps, expected, atol=0, rtol=0)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no maps", "nan maps"])
def test_a_bad_shard_is_named_on_load_and_recomputed_on_rerun(
    data_a: Path, tmp_path: Path, damage: str
) -> None:
    out = copy_of(data_a, tmp_path)
    bad = out / "shard-dl0-rank000-batch000001.pt"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif damage == "garbage":
        bad.write_bytes(b"not a shard at all")
    else:
        shard = torch.load(bad, weights_only=True)
        if damage == "no maps":
            del shard["maps"]
        else:
            shard["maps"][0, 0, 0] = float("nan")
        torch.save(shard, bad)
    with pytest.raises(ValueError, match=r"shard-dl0-rank000-batch000001\.pt .*delete it"):
        load_explanations(out)
    writer = run(out)
    assert [p.name for p in writer.written] == [bad.name]
    _, maps = load_explanations(out)
    _, expected = load_explanations(data_a)
    torch.testing.assert_close(maps, expected, atol=0, rtol=0)


def test_a_partial_run_is_refused_unless_allowed(data_a: Path, tmp_path: Path) -> None:
    out = copy_of(data_a, tmp_path)
    (out / DONE_FILE.format(rank=0)).unlink()
    (out / "shard-dl0-rank000-batch000003.pt").unlink()
    with pytest.raises(ValueError, match="incomplete run.*allow_partial=True"):
        load_explanations(out)
    with pytest.warns(UserWarning, match="incomplete run"):
        indices, maps = load_explanations(out, allow_partial=True)
    assert torch.equal(indices, torch.arange(12)) and maps.shape == (12, 32, 32)
    with pytest.raises(TypeError, match="allow_partial must be a bool"):
        load_explanations(out, allow_partial="yes")


def test_conflicting_duplicates_raise(data_a: Path, tmp_path: Path) -> None:
    out = copy_of(data_a, tmp_path)
    shard = torch.load(out / "shard-dl0-rank000-batch000000.pt", weights_only=True)
    shard["maps"] = shard["maps"] + 1.0  # index 0..3 again, with other maps
    torch.save(shard, out / "shard-dl0-rank001-batch000000.pt")
    record = {"world_size": 2, "shards": ["shard-dl0-rank001-batch000000.pt"]}
    (out / DONE_FILE.format(rank=1)).write_text(json.dumps(record))
    done = out / DONE_FILE.format(rank=0)
    done.write_text(json.dumps({**json.loads(done.read_text()), "world_size": 2}))
    with pytest.raises(ValueError, match="dataset index 0 has two different explanations"):
        load_explanations(out)
    # Identical duplicates (a padding sampler) are dropped.
    shard["maps"] = shard["maps"] - 1.0
    torch.save(shard, out / "shard-dl0-rank001-batch000000.pt")
    indices, _ = load_explanations(out)
    assert torch.equal(indices, torch.arange(13))
