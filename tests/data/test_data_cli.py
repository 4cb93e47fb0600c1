"""``predrnn ingest`` and ``predrnn data ls|show|export`` through the real CLI app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import open_version

runner = CliRunner()


def test_ingest_ls_show_export(root: Path, tmp_path: Path):
    res = runner.invoke(app, ["ingest", "--kind", "moving-digits", "--name", "mm", "--root", str(root),
                              "--num-clips", "12", "--frames", "6", "--height", "32", "--width", "32"])
    assert res.exit_code == 0, res.output
    uri = res.stdout.strip().splitlines()[-1]
    v = open_version(uri)
    assert v.shape == (12, 6, 32, 32, 1)

    res = runner.invoke(app, ["data", "ls", str(root)])
    assert res.exit_code == 0 and uri in res.stdout and "12x6x32x32x1 uint8" in res.stdout

    png = tmp_path / "sample.png"
    res = runner.invoke(app, ["data", "show", uri, "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "(12, 6, 32, 32, 1)" in res.stdout and "seeded" in res.stdout
    with Image.open(png) as img:
        assert img.width > 32 * 5 and img.height > 32

    out = tmp_path / "val.npy"
    res = runner.invoke(app, ["data", "export", f"{root}/mm@latest", "--split", "val", "--out", str(out)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(out), v.read(v.split_indices("val")))


def test_ingest_options_and_bad_input(root: Path, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4, 8, 8), np.int16))
    res = runner.invoke(app, ["ingest", "--kind", "npy", "--source", str(tmp_path / "x.npy"), "--name", "x",
                              "--root", str(root)])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.npy'}: wrong dtype int16; "
                                               "expected uint8 (image) or float"]
    res = runner.invoke(app, ["ingest", "--kind", "moving-digits", "--name", "../x", "--root", str(root)])
    assert res.exit_code == 2 and res.stderr.startswith("error: dataset name")
    res = runner.invoke(app, ["ingest", "--kind", "moving-digits", "--name", "x", "--root", str(root),
                              "--window", "4"])
    assert res.exit_code == 2 and "unknown option(s) ['window']" in res.stderr
    res = runner.invoke(app, ["data", "show", f"{root}/nothing"])
    assert res.exit_code == 2 and "no published version" in res.stderr
    np.save(tmp_path / "ok.npy", np.zeros((3, 4, 8, 8), np.uint8))
    res = runner.invoke(app, ["ingest", "--kind", "npy", "--source", str(tmp_path / "ok.npy"), "--name", "ok",
                              "--root", str(root), "-o", "max_frame_side=4", "-q"])
    assert res.exit_code == 2 and "max_frame_side=4" in res.stderr
