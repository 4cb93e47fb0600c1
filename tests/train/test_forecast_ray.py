"""``predrnn forecast``: a dataset split forecast on Ray Data into a new, atomic, resumable forecast version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import tiny_config
from typer.testing import CliRunner

from predrnn.checkpoint import save_model_dir
from predrnn.cli import app
from predrnn.data import ingest, list_datasets, open_version
from predrnn.models import build_model
from predrnn.precision import resolve_precision
from predrnn.predict import forecast_array

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (seeded weights) for 32x32 one-channel images: 4 context frames, 4 lead times."""
    import torch

    torch.manual_seed(3)
    cfg = tiny_config()
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model_dir(path, build_model(cfg), cfg)
    return path


def _uri(output: str, out: str | Path) -> str:
    """The version URI the command printed last (Ray's log lines may follow it in a shared process)."""
    return [line for line in output.splitlines() if line.startswith(f"{out}@")][-1]


def _predict(model_dir: Path, clips: np.ndarray, horizon: int, precision: str = "fp32") -> np.ndarray:
    from predrnn.checkpoint import load_model_dir

    net, cfg = load_model_dir(model_dir)
    return forecast_array(net, cfg, clips[:, :cfg.data.input_length], horizon, precision=precision)


def test_forecast_on_two_workers_equals_predict_clip_by_clip_and_is_a_dataset_version(
        local_ray, tiny_dataset, model_dir, tmp_path):
    out = f"{tmp_path}/forecasts/tiny-fc"
    args = ["forecast", "--model", str(model_dir), "--data", tiny_dataset, "--out", out, "--workers", "2",
            "--batch-size", "2", "--horizon", "5"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    uri = _uri(res.output, out)
    fc, src = open_version(uri), open_version(tiny_dataset)
    test = src.split_indices("test")
    assert fc.shape == (test.size, 5, 32, 32, 1) and fc.dtype == np.float32
    f = fc.attrs["forecast"]
    assert (f["source"], f["source_version"], f["split"], f["horizon"], f["context"]) == (
        src.uri, src.version, "test", 5, 4)
    assert f["model"] == str(model_dir) and len(f["weights_sha256"]) == 64
    assert "5 test clips" in res.output and "forecast 5 clips in" in res.output
    # `auto`: bf16 where this CPU computes it natively, else fp32; said and recorded
    assert f["precision"] == resolve_precision("auto", "cpu", "forecast")
    assert f"precision {f['precision']} (auto: this CPU" in res.output

    # the split's clips in stored order, each equal to predict's forecast of the same clip
    import zarr

    group = zarr.open_group(str(Path(fc.backend.root_uri) / fc.manifest["path"]), mode="r")
    assert np.array_equal(group["source_index"][:], test)
    want = _predict(model_dir, src.read(test), 5, f["precision"])
    got = fc.read(np.arange(test.size))
    for i in range(test.size):  # bf16 may round a batch of 2 and one of 5 differently
        np.testing.assert_allclose(got[i], want[i], rtol=0, atol=1e-6 if f["precision"] == "fp32" else 1e-2)

    # `data export` reads it like any version; the split is the source's
    exported = tmp_path / "fc.npy"
    res_export = CliRunner().invoke(app, ["data", "export", uri, "--out", str(exported), "--split", "test"])
    assert res_export.exit_code == 0, res_export.output
    assert np.array_equal(np.load(exported), got)

    # `data show` says what made it; an empty split is refused by `data export`
    shown = CliRunner().invoke(app, ["data", "show", uri, "--png", str(tmp_path / "s.png")])
    assert shown.exit_code == 0, shown.output
    assert f"forecast:   {model_dir} (weights sha256 {f['weights_sha256'][:16]}...) on {src.uri} (test)" in shown.output
    assert "overlap:    not applicable" in shown.output and "split:      source" in shown.output
    empty = CliRunner().invoke(app, ["data", "export", uri, "--out", str(tmp_path / "e.npy"), "--split", "train"])
    assert empty.exit_code == 2 and "has no 'train' clips" in empty.output and not (tmp_path / "e.npy").exists()

    # forecasts are made from observations, one forecast dataset per source; GPUs the cluster lacks are refused
    other = ingest("moving-digits", "", "other", f"{tmp_path}/obs", num_clips=8, frames=8, height=32, width=32,
                   seed=4)
    for data, dest, message in ((uri, f"{tmp_path}/forecasts/x", "is a forecast dataset; forecast from observations"),
                                (other, out, f"holds forecasts of {src.backend.join(src.name)}, not of")):
        res = CliRunner().invoke(app, ["forecast", "--model", str(model_dir), "--data", data, "--out", dest])
        assert res.exit_code == 2 and message in res.output, res.output
    res = CliRunner().invoke(app, ["forecast", "--model", str(model_dir), "--data", tiny_dataset, "--out",
                                   f"{tmp_path}/gpu/fc", "--gpus-per-worker", "1"])
    assert res.exit_code == 2 and "need 1 GPUs; the Ray cluster has 0" in res.output, res.output
    assert not (tmp_path / "gpu").exists()

    # scoring it needs the source's frames at every lead time: 4 context + 5 lead times > 8 frames
    short = CliRunner().invoke(app, ["score", "--forecast", uri])
    assert short.exit_code == 2 and "no truth for lead times beyond 4 of the 5 forecast" in short.output

    # the same job again: the published version, nothing forecast
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert _uri(again.output, out) == uri and "published already" in again.output
    assert [r["version"] for r in list_datasets(f"{tmp_path}/forecasts")] == [fc.version]


@pytest.mark.parametrize("change, message", [
    (["data.img_channel=3"], "does not fit the model"),
    (["values.kind=field", "values.units=mm/h"], "holds image data but the model was trained on a field in 'mm/h'"),
    (["model.layer_norm=true", "data.img_height=64", "data.img_width=64"], "does not fit the model"),
    (["data.input_length=12", "data.total_length=16"], "the model's context needs 12"),
])
def test_a_model_that_does_not_fit_the_data_is_refused_before_any_worker_starts(
        tiny_dataset, tmp_path, change, message):
    cfg = tiny_config(*change)
    save_model_dir(tmp_path / "m", build_model(cfg), cfg)
    started = time.perf_counter()
    res = CliRunner().invoke(app, ["forecast", "--model", str(tmp_path / "m"), "--data", tiny_dataset,
                                   "--out", f"{tmp_path}/fc/x", "--ray-address", "127.0.0.1:9"])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "fc").exists()  # nothing staged


def test_forecasts_never_go_into_a_dataset_of_observations(tiny_dataset, model_dir, tmp_path):
    from predrnn.data import parse_uri

    root, name, _ = parse_uri(tiny_dataset)
    for out, message in ((f"{root}/{name}", "is the source dataset"), (f"{root}/{name}@v1", "names a version")):
        res = CliRunner().invoke(app, ["forecast", "--model", str(model_dir), "--data", tiny_dataset, "--out", out])
        assert res.exit_code == 2 and message in res.output, res.output
    other = ingest("moving-digits", "", "obs", str(tmp_path), num_clips=8, frames=8, height=32, width=32, seed=2)
    res = CliRunner().invoke(app, ["forecast", "--model", str(model_dir), "--data", tiny_dataset, "--out",
                                   other.split("@")[0]])
    assert res.exit_code == 2 and "holds observations" in res.output, res.output
    assert [r["name"] for r in list_datasets(tmp_path)] == ["obs"]


def _written(root: Path) -> int:
    """Clips the staged (unpublished) forecast group under ``root`` holds so far."""
    import zarr

    for d in (root / "data").glob("*"):
        try:
            return int(np.asarray(zarr.open_group(str(d), mode="r")["digest"][:]).any(axis=1).sum())
        except Exception:
            return 0
    return 0


def test_a_killed_job_publishes_nothing_and_its_rerun_completes_it(local_ray, model_dir, tmp_path):
    import ray

    src_uri = ingest("moving-digits", "", "long", str(tmp_path / "src"), num_clips=96, frames=8, height=32,
                     width=32, seed=1)
    out = tmp_path / "fc" / "long-fc"
    args = ["forecast", "--model", str(model_dir), "--data", src_uri, "--out", str(out), "--split", "all",
            "--workers", "2", "--batch-size", "1", "--precision", "fp32"]  # compared with an fp32 forecast
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "predrnn.cli", *args, "--ray-address",
                             ray.get_runtime_context().gcs_address], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while _written(out) < 6:
            assert proc.poll() is None, f"the job ended before it could be killed: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "no clip written in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = _written(out)
    assert 6 <= killed_at < 96
    assert list_datasets(tmp_path / "fc") == []  # no half version
    time.sleep(1.0)  # the killed driver's actors are gone

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    done_before = int(res.output.split("resuming job ")[1].split(": ")[1].split(" of")[0])
    assert done_before >= killed_at
    assert f"forecast {96 - done_before} clips in" in res.output
    fc = open_version(_uri(res.output, out))
    assert len(list((out / "data").iterdir())) == 1  # one staged group, completed in place
    want = _predict(model_dir, open_version(src_uri).read(np.arange(96)), 4)
    np.testing.assert_allclose(fc.read(np.arange(96)), want, rtol=0, atol=1e-6)
    assert fc.attrs["forecast"]["split"] == "all"

    # `score` takes the forecast dataset alone: the truth is its source's frames 4..7, images in [0, 1]
    scored = CliRunner().invoke(app, ["score", "--forecast", fc.uri, "--fss-scales", "1,3"])
    assert scored.exit_code == 0, scored.output
    np.save(tmp_path / "f.npy", fc.read(np.arange(96)))
    np.save(tmp_path / "t.npy", open_version(src_uri).read(np.arange(96))[:, 4:8])
    arrays = CliRunner().invoke(app, ["score", "--forecast", str(tmp_path / "f.npy"), "--truth",
                                      str(tmp_path / "t.npy"), "--image", "--fss-scales", "1,3"])
    assert arrays.exit_code == 0, arrays.output
    card, card_arrays = json.loads(scored.output.splitlines()[-1]), json.loads(arrays.output.splitlines()[-1])
    assert card == card_arrays and len(card["mse"]) == 4 and card["ssim"]
    for extra, message in ((["--truth", str(tmp_path / "t.npy")], "scored against its own source"),
                           (["--units", "mm/h"], "values are in 'no units'")):
        res = CliRunner().invoke(app, ["score", "--forecast", fc.uri, *extra])
        assert res.exit_code == 2 and message in res.output, res.output
