"""INT8 calibration data: real image files, read back through OpenCV and runtime preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.int8_data import calibration_cache_path, load_calibration_set
from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig, prepare_frame

CONFIG = PreprocessConfig(height=16, width=16, channels=3)


def _write_images(folder: Path, count: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, size=(20, 24), dtype=np.uint8) for _ in range(count)]
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    return frames


def test_plain_folder_gives_full_fixed_size_uint8_batches(tmp_path) -> None:
    frames = _write_images(tmp_path / "good", 11)
    with pytest.warns(UserWarning, match="only 11 calibration images"):
        calibration = load_calibration_set(tmp_path / "good", CONFIG, batch=4)
    batches = list(calibration.batches())
    assert calibration.num_batches == len(batches) == 2  # the partial third batch is left out
    for batch in batches:
        assert batch.dtype == np.uint8 and batch.shape == (4, 16, 16, 3) and batch.flags.c_contiguous
    # Exactly what the camera loop would feed the engine for the same image.
    np.testing.assert_array_equal(batches[0][0], prepare_frame(frames[0], CONFIG))


def test_mvtec_layout_uses_train_good_only_and_counts_unreadable_files(tmp_path) -> None:
    _write_images(tmp_path / "train" / "good", 5)
    _write_images(tmp_path / "test" / "crack", 3, seed=1)
    (tmp_path / "train" / "good" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning):
        calibration = load_calibration_set(tmp_path, CONFIG, batch=2)
    assert len(calibration.images) == 5 and calibration.skipped == 1 and calibration.num_batches == 2


def test_too_few_or_no_images_is_a_clear_error(tmp_path) -> None:
    _write_images(tmp_path / "few", 3)
    with pytest.raises(DataError, match="at least one batch of 8"):
        load_calibration_set(tmp_path / "few", CONFIG, batch=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_calibration_set(tmp_path / "empty", CONFIG)


def test_calibration_cache_sits_next_to_its_engine(tmp_path) -> None:
    engine = tmp_path / "engines" / "0123456789abcdef_trt10.3.0_orin_int8_b4.engine"
    assert calibration_cache_path(engine) == tmp_path / "engines" / "0123456789abcdef_trt10.3.0_orin_int8_b4.calib"
