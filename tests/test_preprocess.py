"""prepare_frame / prepare_batch / normalise: the one preprocessing shared by training and runtime."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig, normalise, prepare_batch, prepare_frame


def test_centre_crop_keeps_the_middle_before_resizing() -> None:
    # Each pixel holds its column index: the crop's first and last columns say where it was cut.
    frame = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    prepared = prepare_frame(frame, PreprocessConfig(height=50, width=100, channels=1, center_crop=0.5))
    assert prepared.shape == (50, 100, 1)
    assert prepared[0, 0, 0] == 50 and prepared[0, -1, 0] == 149


def test_resize_to_model_geometry_in_either_direction() -> None:
    config = PreprocessConfig(height=32, width=48, channels=3)
    for shape in ((17, 23, 3), (480, 640, 3)):
        prepared = prepare_frame(np.full(shape, 90, np.uint8), config)
        assert prepared.shape == (32, 48, 3) and prepared.dtype == np.uint8
        assert prepared.flags["C_CONTIGUOUS"] and (prepared == 90).all()


def test_colour_conversions_follow_opencv_channel_order() -> None:
    grey = np.full((16, 16), 70, np.uint8)
    assert (prepare_frame(grey, PreprocessConfig(16, 16, 3)) == 70).all()
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[:, :, 0] = 255  # BGR: channel 0 is blue
    as_grey = prepare_frame(blue, PreprocessConfig(16, 16, 1))
    assert as_grey.shape == (16, 16, 1) and (as_grey == 29).all()  # 0.114 * 255, ITU-R BT.601
    bgra = np.dstack([blue, np.zeros((16, 16), np.uint8)])
    assert (prepare_frame(bgra, PreprocessConfig(16, 16, 3)) == blue).all()  # alpha dropped, not blended


def test_deep_and_float_frames_become_uint8() -> None:
    config = PreprocessConfig(8, 8, 1)
    assert (prepare_frame(np.full((8, 8), 0xABCD, np.uint16), config) == 0xAB).all()
    assert (prepare_frame(np.full((8, 8), 0.5, np.float32), config) == 127).all()


def test_unusable_frames_raise_data_error() -> None:
    config = PreprocessConfig(8, 8, 3)
    with pytest.raises(DataError, match="empty frame"):
        prepare_frame(np.zeros((0, 0, 3), np.uint8), config)
    with pytest.raises(DataError, match="shape"):
        prepare_frame(np.zeros((8, 8, 5), np.uint8), config)


def test_prepare_batch_stacks_and_handles_no_frames() -> None:
    config = PreprocessConfig(8, 8, 3)
    assert prepare_batch([np.zeros((10, 12, 3), np.uint8)] * 2, config).shape == (2, 8, 8, 3)
    assert prepare_batch([], config).shape == (0, 8, 8, 3)


def test_normalise_matches_a_hand_computation() -> None:
    config = PreprocessConfig(8, 8, 3, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))
    batch = np.zeros((1, 2, 2, 3), np.uint8)
    batch[0, 0, 0] = (255, 51, 0)
    result = normalise(batch, config)
    assert result.shape == (1, 3, 2, 2) and result.dtype == np.float32
    # (255/255 - 0.5) / 0.25 = 2; (51/255 - 0.4) / 0.2 = -1; (0 - 0.3) / 0.1 = -3
    np.testing.assert_allclose(result[0, :, 0, 0], [2.0, -1.0, -3.0], rtol=1e-6)
    np.testing.assert_allclose(result[0, :, 1, 1], [-2.0, -2.0, -3.0], rtol=1e-6)


def test_config_round_trips_and_collapses_statistics_for_grey() -> None:
    config = PreprocessConfig(24, 40, 1, center_crop=0.8, mean=(0.45,), std=(0.2,))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert PreprocessConfig(8, 8, 3, mean=(0.5,)).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="channels"):
        PreprocessConfig(8, 8, 2)


def test_fast_shrink_matches_area_averaging_on_a_camera_frame() -> None:
    import cv2

    from runtime.preprocess import resize

    rows, cols = np.mgrid[0:720, 0:1280]
    frame = ((np.sin(rows / 37.0) + np.cos(cols / 23.0) + 2) * 60).astype(np.uint8)
    fast = resize(frame, 128, 128).astype(np.float32)
    area = cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert fast.shape == (128, 128)
    assert np.abs(fast - area).mean() < 1.0


def test_grey_model_gets_one_channel_from_a_colour_frame() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[..., 2] = 255  # pure red in BGR
    prepared = prepare_frame(frame, PreprocessConfig(height=64, width=64, channels=1))
    assert prepared.shape == (64, 64, 1)
    assert abs(int(prepared[32, 32, 0]) - 76) <= 1  # OpenCV's luma weight for red, 0.299 * 255


def test_an_image_far_smaller_than_the_model_input_is_refused() -> None:
    config = PreprocessConfig(64, 64, 3)
    for side in (1, 8, 15):
        with pytest.raises(DataError, match=f"{side}x{side} px is too small for the model's 64x64 input"):
            prepare_frame(np.full((side, side, 3), 128, np.uint8), config)
    assert prepare_frame(np.full((16, 16, 3), 128, np.uint8), config).shape == (64, 64, 3)  # 4x: still a picture
    with pytest.raises(DataError, match="60x10 px is too small"):  # one side is enough
        prepare_frame(np.full((10, 60, 3), 128, np.uint8), config)
