"""Every source on tiny files written by the test in the source's real format."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from data_helpers import moving_blobs, write_netcdf, write_thuml_npz, write_video
from PIL import Image

from predrnn.data import DataError, ingest, open_version


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_thuml_npz(root: Path, tmp_path: Path, compressed: bool):
    clips = moving_blobs(6, 8)
    src = write_thuml_npz(tmp_path / "mnist.npz", clips, compressed=compressed)
    v = open_version(ingest("thuml-npz", str(src), "mm", str(root), val_fraction=0.2, test_fraction=0.2))
    assert v.shape == (6, 8, 16, 16, 1) and v.dtype == np.uint8
    np.testing.assert_array_equal(v.read(np.arange(6))[..., 0], clips)
    assert v.attrs["split"]["method"] == "seeded"


def test_thuml_npz_folder_gives_the_split(root: Path, tmp_path: Path):
    folder = tmp_path / "mm"
    folder.mkdir()
    for name, n in (("moving-mnist-train", 5), ("moving-mnist-valid", 2), ("moving-mnist-test", 3)):
        write_thuml_npz(folder / f"{name}.npz", moving_blobs(n, 6, seed=n))
    v = open_version(ingest("thuml-npz", str(folder), "mm", str(root)))
    assert v.attrs["split"]["method"] == "source"
    assert v.attrs["split"]["sizes"] == {"train": 5, "val": 2, "test": 3}
    # Files are read in sorted order: test, train, valid.
    np.testing.assert_array_equal(v.read(v.split_indices("test"))[..., 0], moving_blobs(3, 6, seed=3))
    np.testing.assert_array_equal(v.read(v.split_indices("val"))[..., 0], moving_blobs(2, 6, seed=2))


def test_mnist_seq_npy_time_first(root: Path, tmp_path: Path):
    clips = moving_blobs(5, 10)
    np.save(tmp_path / "mnist_test_seq.npy", np.ascontiguousarray(clips.transpose(1, 0, 2, 3)))
    v = open_version(ingest("mnist-seq-npy", str(tmp_path / "mnist_test_seq.npy"), "seq", str(root)))
    assert v.shape == (5, 10, 16, 16, 1)
    np.testing.assert_array_equal(v.read([3])[0, ..., 0], clips[3])


def test_npy_uint8_float_and_npz_member(root: Path, tmp_path: Path):
    img = moving_blobs(4, 6)
    np.save(tmp_path / "img.npy", img)
    v = open_version(ingest("npy", str(tmp_path / "img.npy"), "img", str(root)))
    assert v.dtype == np.uint8 and v.attrs["value_kind"] == "image"
    np.testing.assert_array_equal(v.read(np.arange(4))[..., 0], img)

    phys = np.random.default_rng(1).normal(3.0, 2.0, (5, 4, 6, 7, 2)).astype(np.float64)
    phys[1, 2, 3, 4, 0] = np.nan
    np.savez(tmp_path / "phys.npz", other=np.zeros(3), clips=phys)
    v = open_version(ingest("npy", str(tmp_path / "phys.npz"), "phys", str(root), key="clips", units="K"))
    assert v.dtype == np.float32 and v.shape == (5, 4, 6, 7, 2) and v.attrs["units"] == "K"
    got = v.read(np.arange(5))
    np.testing.assert_allclose(got, phys.astype(np.float32), equal_nan=True)
    assert np.isnan(got[1, 2, 3, 4, 0]) and v.attrs["stats"]["nan_fraction"] > 0
    assert abs(v.attrs["stats"]["mean"] - np.nanmean(phys)) < 1e-4

    unit = (img.astype(np.float32) / 255.0)[..., None]
    np.save(tmp_path / "unit.npy", unit)
    v = open_version(ingest("npy", str(tmp_path / "unit.npy"), "unit", str(root), image=True))
    assert v.dtype == np.uint8
    np.testing.assert_array_equal(v.read(np.arange(4)), img[..., None])


def _frames(t: int = 24, h: int = 32, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * k, axis=1) for k in range(t)])


@pytest.mark.parametrize("ext", ["avi", "mp4", "gif"])
def test_video_folder_windows(root: Path, tmp_path: Path, ext: str):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / f"a.{ext}", _frames())
    write_video(folder / f"b.{ext}", _frames(12))
    v = open_version(ingest("video-folder", str(folder), "vid", str(root), window=8, stride=4, resize="16x24"))
    # a: 24 frames -> windows at 0, 4, 8, 12, 16; b: 12 frames -> 0, 4.
    assert v.shape == (7, 8, 16, 24, 1) and v.dtype == np.uint8
    x = v.read(np.arange(7))
    np.testing.assert_array_equal(x[0, 4:], x[1, :4])  # overlapping windows share decoded frames
    assert x.std() > 10  # real picture content, not blank frames


def test_video_rgb_gif_content_and_folder_split(root: Path, tmp_path: Path):
    frames = _frames(10, 16, 16)
    for split in ("train", "test"):
        (tmp_path / "v" / split).mkdir(parents=True)
        write_video(tmp_path / "v" / split / "clip.gif", frames)
    v = open_version(ingest("video-folder", str(tmp_path / "v"), "gif", str(root), window=5, grayscale=False))
    assert v.shape == (4, 5, 16, 16, 3)
    assert v.attrs["split"]["method"] == "source" and v.attrs["split"]["sizes"]["test"] == 2
    assert np.abs(v.read([0])[0].astype(int) - frames[:5]).mean() < 8  # GIF palette quantisation only


def test_frames_folder_kth_layout(root: Path, tmp_path: Path):
    frames = _frames(9, 16, 20)
    for person in (3, 20):
        d = tmp_path / "kth" / "boxing" / f"person{person:02d}_boxing_d1"
        d.mkdir(parents=True)
        for k in range(9):
            Image.fromarray(frames[k]).save(d / f"image_{k + 1:04d}.png")
    uri = ingest("frames-folder", str(tmp_path / "kth"), "kth", str(root), window=3, stride=3, split="kth")
    v = open_version(uri)
    assert v.shape == (6, 3, 16, 20, 1)
    assert v.attrs["split"]["sizes"] == {"train": 3, "val": 0, "test": 3}
    grey = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in frames])
    np.testing.assert_array_equal(v.read([1])[0, ..., 0], grey[3:6])


def test_netcdf_windows_and_missing_values(root: Path, tmp_path: Path):
    data = np.random.default_rng(0).gamma(1.0, 2.0, (25, 6, 8)).astype(np.float32)
    data[3, 1, 1] = -999.0  # the fill value: no data
    src = write_netcdf(tmp_path / "radar.nc", data)
    v = open_version(ingest("netcdf", str(src), "radar", str(root), window=10, stride=5,
                                 val_fraction=0.0, test_fraction=0.0))
    assert v.shape == (4, 10, 6, 8, 1) and v.dtype == np.float32 and v.attrs["units"] == "mm/h"
    x = v.read(np.arange(4))[..., 0]
    assert np.isnan(x[0, 3, 1, 1])
    expect = data.copy()
    expect[3, 1, 1] = np.nan
    np.testing.assert_allclose(x[2], expect[10:20])
    assert v.attrs["value_kind"] == "physical"
    # the grid's own units reach the model's transform, with HKO-7's thresholds for mm/h
    values = v.attrs["values"]
    assert (values["kind"], values["units"], values["thresholds"]) == ("field", "mm/h", [0.5, 2.0, 5.0, 10.0, 30.0])


def test_zarr_grid_source(root: Path, tmp_path: Path):
    import zarr

    data = np.arange(12 * 4 * 5, dtype=np.float32).reshape(12, 4, 5)
    g = zarr.open_group(str(tmp_path / "grid.zarr"), mode="w")
    arr = g.create_array("precip", shape=data.shape, dtype="f4", dimension_names=("time", "lat", "lon"))
    arr[:] = data
    arr.attrs["units"] = "mm"
    v = open_version(ingest("netcdf", str(tmp_path / "grid.zarr"), "grid", str(root), window=4,
                                 val_fraction=0.0, test_fraction=0.0))
    assert v.shape == (3, 4, 4, 5, 1) and v.attrs["units"] == "mm"
    np.testing.assert_array_equal(v.read([2])[0, ..., 0], data[8:12])


def test_moving_digits_from_an_idx_file(root: Path, tmp_path: Path):
    glyphs = np.zeros((3, 10, 10), np.uint8)
    glyphs[:, 2:8, 2:8] = 200
    header = np.array([0x00000803, 3, 10, 10], dtype=">u4").tobytes()
    with gzip.open(tmp_path / "glyphs-idx3-ubyte.gz", "wb") as fh:
        fh.write(header + glyphs.tobytes())
    uri = ingest("moving-digits", "", "idx", str(root), num_clips=5, frames=6, height=32, width=32,
                 digits_idx=str(tmp_path / "glyphs-idx3-ubyte.gz"))
    x = open_version(uri).read(np.arange(5))
    assert x.shape == (5, 6, 32, 32, 1) and set(np.unique(x)) <= {0, 200}
    assert ((x > 0).sum(axis=(2, 3, 4)) >= 36).all()  # each frame shows at least one whole 6x6 glyph


def test_moving_digits_is_fast_and_deterministic(root: Path):
    import time

    t0 = time.perf_counter()
    a = ingest("moving-digits", "", "fast", str(root), num_clips=1000)
    elapsed = time.perf_counter() - t0
    assert open_version(a).shape == (1000, 20, 64, 64, 1)
    assert elapsed < 30, f"1000 clips took {elapsed:.1f} s"
    other = root.parent / "other-root"
    assert ingest("moving-digits", "", "fast", str(other), num_clips=1000).rsplit("@", 1)[1] == a.rsplit("@", 1)[1]


def test_storm_cells(root: Path):
    uri = ingest("storm-cells", "", "storm", str(root), num_clips=6, frames=10, height=32, width=32, radar_mask=True)
    v = open_version(uri)
    assert v.shape == (6, 10, 32, 32, 1) and v.dtype == np.float32 and v.attrs["units"] == "mm/h"
    x = v.read(np.arange(6))
    assert np.isnan(x[:, :, 0, 0]).all() and not np.isnan(x[:, :, 16, 16]).any()  # radar range mask
    valid = x[~np.isnan(x)]
    assert valid.min() >= 0 and valid.max() > 1
    assert np.nanmean(np.abs(np.diff(x, axis=1))) > 0  # the field moves and evolves


def test_channels_first_arrays_need_their_layout(root: Path, tmp_path: Path):
    """(N, T, C, H, W) as OpenSTL users keep them: refused under the default layout, read right with NTCHW."""
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (6, 53, 3, 100, 100), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", clips)
    with pytest.raises(DataError, match=r"shape \(6, 53, 3, 100, 100\) read as NTHWC gives 3x100 frames with 100 "
                                         r"channels, which is implausible; if the axes are NTCHW, pass --layout NTCHW"):
        ingest("npy", str(tmp_path / "rgb.npy"), "rgb", str(root))
    v = open_version(ingest("npy", str(tmp_path / "rgb.npy"), "rgb", str(root), layout="NTCHW"))
    assert v.shape == (6, 53, 100, 100, 3)
    np.testing.assert_array_equal(v.read(np.arange(6)), clips.transpose(0, 1, 3, 4, 2))
    with pytest.raises(DataError, match="unknown option"):
        ingest("moving-digits", "", "md", str(root), num_clips=2, layout="NTCHW")  # not an option of generators
    with pytest.raises(DataError, match="layout NTHW needs 4"):
        ingest("npy", str(tmp_path / "rgb.npy"), "rgb", str(root), layout="NTHW")
