"""Bad input fails before any worker starts: dataset, config, tracking store; and the pure helpers."""

from __future__ import annotations

import time

import pytest
import torch
from train_helpers import free_port, tiny_config

from predrnn.checkpoint import CheckpointError
from predrnn.config import ConfigError
from predrnn.data import DataError as DatasetError
from predrnn.data import validate_dataset
from predrnn.data.batches import batch_indices, mask_generator
from predrnn.sampling import probabilities
from predrnn.tracking import TrackingError
from predrnn.train import configure, prepare, train


def _ray_started() -> bool:
    import ray

    return ray.is_initialized()


def test_missing_dataset_fails_before_workers(tmp_path, tracking_uri):
    cfg = tiny_config()
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match="cannot open dataset"):
        train(prepare(cfg, data=str(tmp_path / "nothing@latest"), tracking_uri=tracking_uri,
                      storage_path=str(tmp_path / "runs")))
    assert time.perf_counter() - t0 < 10
    assert not _ray_started()


def test_no_dataset_given(tmp_path):
    with pytest.raises(DatasetError, match="no dataset given"):
        train(prepare(tiny_config(), storage_path=str(tmp_path)))


def test_wrong_frame_size_names_both_shapes(tiny_dataset):
    cfg = tiny_config("data.img_height=64", "data.img_width=64")
    with pytest.raises(DatasetError, match=r"32x32x1 .* expects 64x64x1"):
        validate_dataset(cfg, tiny_dataset)


def test_clips_too_short(tiny_dataset):
    cfg = tiny_config("data.total_length=12")
    with pytest.raises(DatasetError, match="clips of 8 frames.*total_length=12"):
        validate_dataset(cfg, tiny_dataset)


def test_valid_dataset_info(tiny_dataset):
    info = validate_dataset(tiny_config(), tiny_dataset, world_size=2)
    assert info.shape == (48, 8, 32, 32, 1)
    assert info.splits["train"] + info.splits["val"] + info.splits["test"] == 48
    assert "@" in info.uri and info.version in info.uri


def test_unknown_preset_and_override_key():
    from predrnn.config import load_config

    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no_such_preset")
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_config("quick", overrides=["optim.learning_rate=0.1"])


def test_batch_must_split_over_workers():
    with pytest.raises(ConfigError, match="does not split evenly over 3 workers"):
        configure(tiny_config(), workers=3)


def test_unreachable_tracking_server_fails_before_workers(tiny_dataset, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match="unreachable"):
        train(prepare(tiny_config(), data=tiny_dataset, tracking_uri=uri, storage_path=str(tmp_path / "runs")))
    assert not _ray_started()


def test_cli_reports_unknown_key_and_missing_data(tmp_path):
    from typer.testing import CliRunner

    from predrnn.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x@latest"), "--preset", "quick",
                              "--set", "model.widht=3"])
    assert res.exit_code == 2 and "unknown config key 'model.widht'" in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x@latest"), "--preset", "nope"])
    assert res.exit_code == 2 and "unknown preset" in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x@latest"), "--preset", "quick",
                              "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert res.exit_code == 2 and "cannot open dataset" in res.output


def test_batch_order_is_a_pure_function_of_the_iteration():
    a = [batch_indices(it, shard_size=10, batch=3, seed=1, rank=0) for it in range(1, 7)]
    b = [batch_indices(it, shard_size=10, batch=3, seed=1, rank=0) for it in range(1, 7)]
    assert a == b
    epoch = sum(a[:3], [])  # 3 batches per epoch of 10 clips: no clip twice within an epoch
    assert len(set(epoch)) == 9
    assert batch_indices(1, shard_size=2, batch=4, seed=0, rank=0).__len__() == 4
    m1 = torch.rand(3, generator=mask_generator(0, 1, 17))
    m2 = torch.rand(3, generator=mask_generator(0, 1, 17))
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, torch.rand(3, generator=mask_generator(0, 0, 17)))


def test_schedule_values_follow_the_global_iteration():
    cfg = tiny_config().sampling
    assert probabilities(1, cfg) == (0.5, 0.5)
    r, e = probabilities(7, cfg)
    assert 0.5 < r < 1 and 0 < e < 0.5
    assert probabilities(12, cfg) == (1.0, 0.0)


def _two_checkpoints(root):
    from predrnn.models import build_model
    from predrnn.train.state import checkpoint_name, rng_state, save_checkpoint

    cfg = tiny_config()
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    paths = []
    for it in (4, 8):
        paths.append(save_checkpoint(root / checkpoint_name(it), model=model, optimizer=opt, iteration=it,
                                     cfg=cfg, dataset={"uri": "x"}, rng=[rng_state()],
                                     metrics={"val_mse": float(it)}))
    return paths


def test_checkpoint_roundtrip(tmp_path):
    from predrnn.train.state import load_checkpoint

    _, latest = _two_checkpoints(tmp_path)
    state = load_checkpoint(latest)
    assert state.iteration == 8 and state.metrics == {"val_mse": 8.0} and state.dataset == {"uri": "x"}


def test_corrupt_checkpoint_names_the_file_and_falls_back(tmp_path, capsys):
    from ray.train import Checkpoint

    from predrnn.train.loop import restore_latest
    from predrnn.train.state import STATE_FILE, load_checkpoint

    _, latest = _two_checkpoints(tmp_path)
    (latest / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(latest / STATE_FILE)):
        load_checkpoint(latest)
    state = restore_latest(Checkpoint(str(latest)))
    assert state.iteration == 4
    assert str(latest / STATE_FILE) in capsys.readouterr().err


def test_corrupt_weights_are_named_too(tmp_path):
    from predrnn.train.state import MODEL_DIR, load_checkpoint

    _, latest = _two_checkpoints(tmp_path)
    (latest / MODEL_DIR / "model.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_checkpoint(latest)


def test_a_model_is_only_scored_on_data_with_its_kind_and_units(tiny_dataset, tmp_path):
    import dataclasses

    from predrnn.config import ValuesConfig
    from predrnn.data import ingest

    rain = ingest("storm-cells", "", "rain", str(tmp_path), num_clips=6, frames=8, height=32, width=32)
    image_model = tiny_config()
    with pytest.raises(DatasetError, match="holds a field in 'mm/h' but the model was trained on image data"):
        validate_dataset(image_model, rain, for_model=True)
    kelvin = dataclasses.replace(image_model, values=ValuesConfig(kind="field", units="K"))
    with pytest.raises(DatasetError, match="holds a field in 'mm/h' but the model was trained on a field in 'K'"):
        validate_dataset(kelvin, rain, for_model=True)
    with pytest.raises(DatasetError, match="holds image data but the model was trained on a field in 'K'"):
        validate_dataset(kelvin, tiny_dataset, for_model=True)
    info = validate_dataset(image_model, rain)  # training: the values come from the dataset
    assert info.values["kind"] == "field" and info.values["units"] == "mm/h" and info.values["valid_min"] == 0.0


def _authors_npz(path, n: int, seed: int) -> None:
    """A self-made file in the authors' Moving MNIST layout: input_raw_data (n*T, 1, H, W), clips, dims."""
    import numpy as np

    t, half = 8, 4
    raw = np.random.default_rng(seed).random((n * t, 1, 32, 32), dtype=np.float32)
    index = np.zeros((2, n, 2), np.int32)
    index[0, :, 0], index[0, :, 1] = np.arange(n) * t, half
    index[1, :, 0], index[1, :, 1] = np.arange(n) * t + half, t - half
    np.savez(path, input_raw_data=raw, clips=index, dims=np.array([[1, 32, 32]], np.int32))


def test_a_dataset_without_test_split_fails_before_training(tmp_path, tracking_uri):
    """train + valid files only: refused in seconds with exit code 2, before Ray or MLflow (no RUNNING run)."""
    from typer.testing import CliRunner

    from predrnn.cli import app
    from predrnn.data import ingest

    folder = tmp_path / "mine"
    folder.mkdir()
    _authors_npz(folder / "mnist-train.npz", 6, 0)
    _authors_npz(folder / "mnist-valid.npz", 2, 1)
    uri = ingest("thuml-npz", str(folder), "mine", str(tmp_path / "data"))
    t0 = time.perf_counter()
    args = ["train", "--data", uri, "--preset", "quick", "--tracking-uri", tracking_uri, "--storage",
            str(tmp_path / "runs")]
    for item in ("data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8"):
        args += ["--set", item]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "has no test split, which the run's final evaluation needs" in res.output
    assert res.output.strip().count("\n") == 0 and time.perf_counter() - t0 < 10
    assert not _ray_started() and not (tmp_path / "runs").exists()


def test_nightly_preflight_names_each_split_it_cannot_use(tmp_path):
    """nightly-retrain resolves its run once (prepare_nightly): the training version's splits and the separate
    test version are checked before training, each refusal naming what does not fit."""
    from predrnn.config import load_config
    from predrnn.data import ingest
    from predrnn.jobs.nightly import NightlySpec, prepare_nightly
    from predrnn.train import configure

    folder = tmp_path / "mine"
    folder.mkdir()
    _authors_npz(folder / "mnist-train.npz", 6, 0)
    _authors_npz(folder / "mnist-valid.npz", 2, 1)
    no_test = ingest("thuml-npz", str(folder), "mine", str(tmp_path / "data"))
    _authors_npz(folder / "mnist-test.npz", 2, 2)
    full = ingest("thuml-npz", str(folder), "mine", str(tmp_path / "data"))
    other = ingest("moving-digits", "", "other", str(tmp_path / "data"), num_clips=6, frames=8, height=48, width=48)
    rain = ingest("storm-cells", "", "rain", str(tmp_path / "data"), num_clips=6, frames=8, height=32, width=32)
    overrides = ["data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8"]

    def preflight(data: str, changes: list[str], test: str | None) -> NightlySpec:
        cfg = configure(load_config("quick", None, changes), workers=1)
        return prepare_nightly(cfg, data=data, test_dataset=test, state_dir=tmp_path / "state")

    with pytest.raises(DatasetError, match="has no test split, which the run's final evaluation needs"):
        preflight(no_test, overrides, None)
    with pytest.raises(DatasetError, match=r"other@.* has frames of 48x48x1 .* expects 32x32x1"):
        preflight(full, overrides, other)
    with pytest.raises(DatasetError, match=r"rain@.* holds a field in 'mm/h' but the model was trained on image data"):
        preflight(full, overrides, rain)
    with pytest.raises(DatasetError, match="clips of 8 frames.*total_length=12"):
        preflight(full, [*overrides[:2], "data.total_length=12"], None)
    checked = preflight(full, overrides, full)
    assert checked.test_dataset.splits["test"] == 2 and checked.run.dataset.uri == checked.test_dataset.uri
    assert NightlySpec.from_dict(checked.to_dict()) == checked  # what the flow passes between its tasks
    assert preflight(full, overrides, None).test_dataset == checked.run.dataset  # default: the training version
