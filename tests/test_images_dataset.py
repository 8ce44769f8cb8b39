"""Image reading and data set loading on real files written to tmp_path and read back by OpenCV."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.dataset import (
    Sample,
    find_samples,
    format_summary,
    has_test_split,
    load_images,
    load_masks,
    summarize,
)
from runtime.errors import DataError
from runtime.images import list_images, read_image
from runtime.preprocess import PreprocessConfig

CONFIG = PreprocessConfig(height=32, width=32, channels=3)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _colour(height: int = 40, width: int = 50, value: int = 100) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    """train/good x3 (colour), test/good x2 (grey), test/scratch x2 with one mask."""
    root = tmp_path / "widget"
    for index in range(3):
        _write(root / "train" / "good" / f"{index:03d}.png", _colour(value=50 * index))
    for index in range(2):
        _write(root / "test" / "good" / f"{index:03d}.png", np.full((40, 50), 90, np.uint8))
        _write(root / "test" / "scratch" / f"{index:03d}.png", _colour())
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:30] = 255
    _write(root / "ground_truth" / "scratch" / "000_mask.png", mask)
    return root


def test_mvtec_layout_gives_labels_defects_and_masks(mvtec: Path) -> None:
    train = find_samples(mvtec, "train")
    assert [(s.label, s.defect) for s in train] == [(0, "good")] * 3
    test = find_samples(mvtec, "test")
    assert [(s.path.name, s.label, s.defect) for s in test] == [
        ("000.png", 0, "good"), ("001.png", 0, "good"), ("000.png", 1, "scratch"), ("001.png", 1, "scratch"),
    ]
    assert test[2].mask_path == mvtec / "ground_truth" / "scratch" / "000_mask.png"
    assert test[3].mask_path is None
    assert has_test_split(mvtec)


def test_summary_counts_splits_defects_and_masks(mvtec: Path) -> None:
    summary = summarize(mvtec)
    assert summary["train"] == {"good": 3}
    assert summary["test"] == {"good": 2, "scratch": 2}
    assert summary["masks"] == 1
    assert "test: good 2, scratch 2" in format_summary(summary)


def test_plain_folder_is_a_good_only_training_set(tmp_path: Path) -> None:
    for index in range(2):
        _write(tmp_path / f"frame{index}.jpg", _colour(value=30))
    (tmp_path / "notes.txt").write_text("not an image")
    samples = find_samples(tmp_path, "train")
    assert [(s.path.name, s.label, s.defect) for s in samples] == [("frame0.jpg", 0, "good"), ("frame1.jpg", 0, "good")]
    assert not has_test_split(tmp_path)
    with pytest.raises(DataError, match="no test split") as error:
        find_samples(tmp_path, "test")
    assert str(tmp_path / "test") in str(error.value)


def test_missing_split_names_the_expected_path(mvtec: Path) -> None:
    for path in sorted((mvtec / "train").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (mvtec / "train").rmdir()
    with pytest.raises(DataError, match="missing folder") as error:
        find_samples(mvtec, "train")
    assert str(mvtec / "train" / "good") in str(error.value)


def test_empty_split_and_missing_root_are_errors(mvtec: Path, tmp_path: Path) -> None:
    for path in (mvtec / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="no images in"):
        find_samples(mvtec, "train")
    with pytest.raises(DataError, match="does not exist"):
        find_samples(tmp_path / "nowhere", "train")


def test_corrupt_and_empty_images_are_skipped_with_a_warning_and_counted(mvtec: Path) -> None:
    corrupt = mvtec / "train" / "good" / "100.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    empty = mvtec / "train" / "good" / "101.png"
    empty.write_bytes(b"")
    assert read_image(corrupt) is None and read_image(empty) is None
    with pytest.warns(UserWarning, match="skipping") as caught:
        loaded = load_images(find_samples(mvtec, "train"), CONFIG)
    assert len(caught) == 2
    assert loaded.skipped == [corrupt, empty]
    assert loaded.images.shape == (3, 32, 32, 3) and loaded.images.dtype == np.uint8
    assert [s.path.name for s in loaded.samples] == ["000.png", "001.png", "002.png"]


def test_no_readable_image_at_all_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 images"):
            load_images(find_samples(tmp_path, "train"), CONFIG)


def test_any_format_depth_and_size_comes_out_at_the_model_geometry(tmp_path: Path) -> None:
    sixteen_bit = np.full((33, 47), 40000, np.uint16)
    bgra = np.dstack([_colour(31, 29, 200), np.full((31, 29), 255, np.uint8)])
    files = [
        _write(tmp_path / "grey.bmp", np.full((37, 53), 60, np.uint8)),
        _write(tmp_path / "colour.png", _colour(61, 17, 120)),
        _write(tmp_path / "deep.tif", sixteen_bit),
        _write(tmp_path / "alpha.png", bgra),
        _write(tmp_path / "photo.jpeg", _colour(64, 64, 10)),
    ]
    assert read_image(files[2]).dtype == np.uint16  # stored depth is kept until preprocessing
    samples = [Sample(path, 0, "good", None) for path in files]
    with pytest.warns(UserWarning, match="2 grey image"):  # grey.bmp and deep.tif, named for a colour model
        colour = load_images(samples, CONFIG).images
    assert colour.shape == (5, 32, 32, 3)
    assert (colour[0] == 60).all() and (colour[1] == 120).all() and (colour[3] == 200).all()
    assert (colour[2] == 40000 >> 8).all()
    grey = load_images(samples, PreprocessConfig(height=24, width=40, channels=1)).images
    assert grey.shape == (5, 24, 40, 1)


def test_non_ascii_paths_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "prüfung" / "teil_ö.png", _colour(value=77))
    assert list_images(path.parent) == [path]
    assert (read_image(path) == 77).all()


def test_symlinks_leaving_the_root_are_ignored(mvtec: Path, tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere" / "secret.png", _colour())
    os.symlink(outside, mvtec / "train" / "good" / "link.png")
    os.symlink(outside.parent, mvtec / "test" / "stolen", target_is_directory=True)
    inside = mvtec / "train" / "good" / "again.png"
    os.symlink(mvtec / "train" / "good" / "000.png", inside)
    with pytest.warns(UserWarning, match="outside the data set root"):
        train = find_samples(mvtec, "train")
    assert [s.path.name for s in train] == ["000.png", "001.png", "002.png", "again.png"]
    with pytest.warns(UserWarning, match="outside the data set root"):
        test = find_samples(mvtec, "test")
    assert {s.defect for s in test} == {"good", "scratch"}


def test_masks_follow_the_image_crop_and_stay_binary(tmp_path: Path) -> None:
    root = tmp_path / "part"
    _write(root / "train" / "good" / "000.png", _colour(64, 64))
    _write(root / "test" / "good" / "000.png", _colour(64, 64))
    _write(root / "test" / "dent" / "000.png", _colour(64, 64))
    _write(root / "test" / "dent" / "001.png", _colour(64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 40:60] = 255
    _write(root / "ground_truth" / "dent" / "000_mask.png", mask)
    samples = find_samples(root, "test")  # dent/000 (mask), dent/001 (no mask file), good/000
    # Centre crop 0.5 keeps rows/cols 16:48, so the defect sits at rows 4:14, cols 24:32.
    cropped = load_masks(samples, PreprocessConfig(height=32, width=32, center_crop=0.5))
    expected = np.zeros((32, 32), bool)
    expected[4:14, 24:32] = True
    assert cropped.dtype == bool and cropped.shape == (3, 32, 32)
    assert not cropped[1].any() and not cropped[2].any()
    np.testing.assert_array_equal(cropped[0], expected)
    # Halving with nearest neighbour takes source row/col 2*i: rows 2:7, cols 12:16.
    halved = load_masks(samples, PreprocessConfig(height=16, width=16, center_crop=0.5))
    expected = np.zeros((16, 16), bool)
    expected[2:7, 12:16] = True
    np.testing.assert_array_equal(halved[0], expected)


def test_progress_bar_goes_to_stderr(mvtec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_images(find_samples(mvtec, "train"), CONFIG, progress=True)
    captured = capsys.readouterr()
    assert "loading images" in captured.err and captured.out == ""


def test_tiny_images_are_skipped_and_grey_ones_for_a_colour_model_named(tmp_path: Path) -> None:
    files = [
        _write(tmp_path / "one-pixel.png", _colour(1, 1, 90)),
        _write(tmp_path / "thumbnail.png", _colour(8, 8, 90)),
        _write(tmp_path / "grey.png", np.full((32, 32), 90, np.uint8)),
        _write(tmp_path / "colour.png", _colour(32, 32, 90)),
    ]
    config = PreprocessConfig(height=64, width=64, channels=3)
    with pytest.warns(UserWarning) as caught:
        loaded = load_images([Sample(path, 0, "good", None) for path in files], config)
    assert loaded.skipped == files[:2] and all("too small for the model's 64x64 input" in reason
                                               for reason in loaded.skip_reasons)
    assert [s.path for s in loaded.samples] == files[2:] and loaded.grey == [files[2]]
    messages = [str(warning.message) for warning in caught]
    assert any("1 grey image(s) given to a colour model" in text and "grey.png" in text for text in messages)
    grey_model = load_images([Sample(path, 0, "good", None) for path in files[2:]], PreprocessConfig(64, 64, 1))
    assert grey_model.grey == []  # a colour image for a grey model loses nothing the model uses
