"""Each bad input: a clear error naming file, clip and problem, and nothing published or left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import moving_blobs, write_thuml_npz, write_video

from predrnn.data import DataError, ingest, list_datasets


def _nothing_published(root: Path) -> None:
    assert list_datasets(root) == []
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


def _thuml(tmp_path: Path, n: int = 4, t: int = 8) -> tuple[Path, dict[str, np.ndarray]]:
    src = write_thuml_npz(tmp_path / "mm.npz", moving_blobs(n, t))
    with np.load(src) as z:
        return src, {k: z[k] for k in z.files}


def test_ragged_clip_lengths(root: Path, tmp_path: Path):
    src, arrays = _thuml(tmp_path)
    arrays["clips"][1, 2, 1] -= 1  # clip 2's output is one frame short
    np.savez(src, **arrays)
    with pytest.raises(DataError, match=r"mm\.npz: clip 2: ragged clip lengths: 7 frames"):
        ingest("thuml-npz", str(src), "mm", str(root))
    _nothing_published(root)


def test_ragged_lengths_across_files(root: Path, tmp_path: Path):
    np.save(tmp_path / "a.npy", moving_blobs(2, 6))
    np.save(tmp_path / "b.npy", moving_blobs(2, 5))
    with pytest.raises(DataError, match=r"b\.npy: ragged clip lengths"):
        ingest("npy", str(tmp_path), "mm", str(root))
    _nothing_published(root)


def test_nan_in_image_data(root: Path, tmp_path: Path):
    src, arrays = _thuml(tmp_path)
    arrays["input_raw_data"][3 * 8 + 5, 0, 2, 2] = np.nan  # clip 3, frame 5
    np.savez(src, **arrays)
    with pytest.raises(DataError, match=r"mm\.npz: clip 3: NaN/inf in image data \(first at frame 5"):
        ingest("thuml-npz", str(src), "mm", str(root))
    _nothing_published(root)


def test_inf_in_image_data_npy(root: Path, tmp_path: Path):
    x = moving_blobs(3, 4).astype(np.float32) / 255
    x[1, 0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"x\.npy: clip 1: NaN/inf in image data"):
        ingest("npy", str(tmp_path / "x.npy"), "mm", str(root), image=True)
    _nothing_published(root)


def test_wrong_rank(root: Path, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"x\.npy: wrong rank 3 \(shape \(4, 8, 8\)\)"):
        ingest("npy", str(tmp_path / "x.npy"), "mm", str(root))
    _nothing_published(root)


def test_wrong_dtype(root: Path, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.int64))
    with pytest.raises(DataError, match=r"x\.npy: wrong dtype int64"):
        ingest("npy", str(tmp_path / "x.npy"), "mm", str(root))
    np.save(tmp_path / "seq.npy", np.zeros((20, 2, 8, 8, 1), np.uint8))
    with pytest.raises(DataError, match=r"seq\.npy: wrong rank 5 .*time first"):
        ingest("mnist-seq-npy", str(tmp_path / "seq.npy"), "mm", str(root))
    _nothing_published(root)


def test_empty_source(root: Path, tmp_path: Path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(DataError, match="empty source"):
        ingest("video-folder", str(tmp_path / "videos"), "mm", str(root))
    np.save(tmp_path / "none.npy", np.zeros((0, 4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"empty source \(0 clips\)"):
        ingest("npy", str(tmp_path / "none.npy"), "mm", str(root))
    write_video(tmp_path / "videos" / "short.gif", np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="empty source"):  # every video shorter than the window
        ingest("video-folder", str(tmp_path / "videos"), "mm", str(root), window=10)
    _nothing_published(root)


def test_truncated_video(root: Path, tmp_path: Path):
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "v").mkdir()
    path = write_video(tmp_path / "v" / "cut.avi", frames)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.avi: truncated .*video"):
        ingest("video-folder", str(tmp_path / "v"), "mm", str(root), window=4)
    _nothing_published(root)


def test_corrupt_video(root: Path, tmp_path: Path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "noise.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match=r"noise\.mp4: truncated or corrupt video"):
        ingest("video-folder", str(tmp_path / "v"), "mm", str(root), window=4)
    _nothing_published(root)


def test_corrupt_npz(root: Path, tmp_path: Path):
    src, _ = _thuml(tmp_path)
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)  # damage the stored pixel data: CRC mismatch
    src.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"mm\.npz: corrupt \.npz \(CRC mismatch in member 'input_raw_data\.npy'\)"):
        ingest("thuml-npz", str(src), "mm", str(root))
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match=r"junk\.npz: corrupt \.npz"):
        ingest("npy", str(tmp_path / "junk.npz"), "mm", str(root))
    _nothing_published(root)


def test_clips_indices_out_of_range(root: Path, tmp_path: Path):
    src, arrays = _thuml(tmp_path)
    arrays["clips"][1, 3, 0] = 10_000
    np.savez(src, **arrays)
    with pytest.raises(DataError, match=r"mm\.npz: clip 3: clips indices out of range .*holds 32 frames"):
        ingest("thuml-npz", str(src), "mm", str(root))
    _nothing_published(root)


def test_frames_larger_than_the_limit(root: Path, tmp_path: Path):
    np.save(tmp_path / "big.npy", np.zeros((2, 3, 40, 30), np.uint8))
    with pytest.raises(DataError, match=r"big\.npy: frame size 40x30 is larger than the configured limit "
                                        r"max_frame_side=32"):
        ingest("npy", str(tmp_path / "big.npy"), "mm", str(root), max_frame_side=32)
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "big.mp4", np.zeros((8, 48, 64, 3), np.uint8))
    with pytest.raises(DataError, match=r"big\.mp4: frame size 48x64 is larger"):
        ingest("video-folder", str(tmp_path / "v"), "mm", str(root), window=4, resize=16, max_frame_side=32)
    _nothing_published(root)


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", "../up", "a\\b", ""])
def test_bad_dataset_name(root: Path, name: str):
    with pytest.raises(DataError, match="dataset name"):
        ingest("moving-digits", "", name, str(root), num_clips=2)
    _nothing_published(root)


def test_destination_not_writable(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"destination .*a-file/root is not writable"):
        ingest("moving-digits", "", "mm", str(blocker / "root"), num_clips=2)


def test_failure_mid_write_removes_staging(root: Path, tmp_path: Path):
    clips = moving_blobs(300, 4).astype(np.float32) / 255
    clips[290, 1, 0, 0] = np.nan  # found after the first batch of 256 clips was written
    np.save(tmp_path / "x.npy", clips)
    seen: list[int] = []
    with pytest.raises(DataError, match=r"x\.npy: clip 290: NaN/inf in image data"):
        ingest("npy", str(tmp_path / "x.npy"), "mm", str(root), image=True, progress=seen.append)
    assert seen == [256]
    _nothing_published(root)
