"""Frame sources: real videos and image files written to tmp_path and read back through OpenCV."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_bundle import grey_frame

from runtime.errors import DataError
from runtime.line.sources import (
    Backoff,
    Frame,
    FrameReader,
    Reconnecting,
    SourceReadError,
    csi_pipeline,
    gstreamer_available,
    open_source,
)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi, which opencv-python-headless writes and reads everywhere."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def defect_pattern(count: int, every: int = 4) -> list[bool]:
    """Which frames of a test stream carry a defect (a bright blob)."""
    return [index % every == 1 for index in range(count)]


def part_frames(count: int, height: int = 40, width: int = 48) -> list[np.ndarray]:
    return [grey_frame(height, width, blob=250 if bad else None) for bad in defect_pattern(count)]


def read_all(source) -> list[Frame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_video_file_frames_in_order_and_loop(tmp_path) -> None:
    path = write_video(tmp_path / "line.avi", part_frames(6))
    frames = read_all(open_source(str(path)))
    assert len(frames) == 6
    blobs = [frame.image[20, 24].mean() > 200 for frame in frames]  # MJPG is lossy; the blob survives
    assert blobs == defect_pattern(6)
    looping = open_source(str(path), loop=True)
    assert len([looping.read() for _ in range(15)]) == 15 and looping.read() is not None


def test_image_folder_sorted_with_names_and_unreadable_file_as_empty_frame(tmp_path) -> None:
    for index, frame in enumerate(part_frames(3)):
        cv2.imwrite(str(tmp_path / f"part_{index:02d}.png"), frame)
    (tmp_path / "part_01b.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = read_all(open_source(str(tmp_path)))
    assert [frame.name for frame in frames] == ["part_00.png", "part_01.png", "part_01b.png", "part_02.png"]
    assert frames[2].image is None and frames[1].image.shape == (40, 48, 3)


def test_glob_and_single_image(tmp_path) -> None:
    for index, frame in enumerate(part_frames(3)):
        cv2.imwrite(str(tmp_path / f"{index}.png"), frame)
        cv2.imwrite(str(tmp_path / f"{index}.jpg"), frame)
    assert [f.name for f in read_all(open_source(str(tmp_path / "*.png")))] == ["0.png", "1.png", "2.png"]
    assert [f.name for f in read_all(open_source(str(tmp_path / "1.jpg")))] == ["1.jpg"]


def test_glob_over_class_folders_names_frames_relative_to_its_fixed_folder(tmp_path) -> None:
    for label in ("crack", "good"):
        (tmp_path / "test" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "test" / label / "000.png"), part_frames(1)[0])
    names = [frame.name for frame in read_all(open_source(str(tmp_path / "test" / "*" / "*.png")))]
    assert names == ["crack/000.png", "good/000.png"]


def test_sources_that_cannot_open_are_named(tmp_path) -> None:
    with pytest.raises(DataError, match="missing.avi"):
        open_source(str(tmp_path / "missing.avi"))
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match="cannot open source .*broken.avi"):
        open_source(str(broken))
    with pytest.raises(DataError, match="holds no images"):
        open_source(str(tmp_path / "*.png"))


@pytest.mark.skipif(gstreamer_available(), reason="checks the message where OpenCV lacks GStreamer")
def test_gstreamer_pipeline_without_gstreamer_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="GStreamer: NO.*system OpenCV"):
        open_source("videotestsrc ! videoconvert ! appsink")
    with pytest.raises(DataError, match="GStreamer"):
        open_source("csi://0")


def test_csi_uri_expands_to_an_nvargus_pipeline() -> None:
    pipeline = csi_pipeline("csi://1?width=1280&height=720&fps=60")
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 !")
    assert "width=1280, height=720, framerate=60/1" in pipeline and pipeline.endswith("sync=false")
    with pytest.raises(DataError, match="csi://N"):
        csi_pipeline("csi://left")


class FlakySource:
    """Fails `failures` times, then delivers frames; counts how often it was (re)opened."""

    name, live = "flaky", True

    def __init__(self, failures: int) -> None:
        self.failures, self.opened = failures, 0

    def open(self) -> "FlakySource":
        self.opened += 1
        return self

    def read(self) -> Frame:
        if self.failures:
            self.failures -= 1
            raise SourceReadError("no frame delivered")
        return Frame(grey_frame(8, 8))

    def close(self) -> None:
        pass


def test_reconnect_backs_off_exponentially_with_a_cap_and_recovers() -> None:
    flaky, delays = FlakySource(failures=6), []
    source = Reconnecting(flaky.open, Backoff(initial_s=0.5, factor=2.0, max_s=4.0, attempts=10), delays.append)
    assert source.read().image.shape == (8, 8, 3)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert source.read_errors == 6 and source.reconnects == 6 and flaky.opened == 7


def test_reconnect_gives_up_after_bounded_attempts() -> None:
    source = Reconnecting(FlakySource(failures=100).open, Backoff(attempts=3), lambda seconds: None)
    with pytest.raises(DataError, match="flaky failed 4 times in a row"):
        source.read()


class CountingSource:
    """Frames numbered in their pixels, as fast as asked; None after `count`."""

    name, live = "counting", False

    def __init__(self, count: int, delay_s: float = 0.0) -> None:
        self.count, self.delay_s, self.produced = count, delay_s, 0

    def read(self) -> Frame | None:
        if self.produced >= self.count:
            return None
        time.sleep(self.delay_s)
        frame = Frame(np.full((4, 4, 3), self.produced % 256, dtype=np.uint8))
        self.produced += 1
        return frame

    def close(self) -> None:
        pass


def test_lossless_reader_delivers_every_frame_in_order() -> None:
    source = CountingSource(300)
    with FrameReader(source, "lossless", depth=3) as reader:
        indices = [frame.index for frame in reader if frame.image[0, 0, 0] == frame.index % 256]
    assert indices == list(range(300)) and reader.dropped == 0


def test_realtime_reader_keeps_only_the_newest_frame_and_counts_drops() -> None:
    source = CountingSource(400)
    taken, most_waiting = [], 0
    with FrameReader(source, "realtime") as reader:
        for frame in reader:
            most_waiting = max(most_waiting, reader.pending)
            taken.append(frame.index)
            time.sleep(0.002)  # a model slower than the source
    assert reader.dropped > 0 and most_waiting <= 1
    assert len(taken) + reader.dropped == reader.produced == 400
    assert taken == sorted(set(taken))


def test_reader_stops_when_asked_and_reraises_source_errors() -> None:
    stop = threading.Event()
    with FrameReader(CountingSource(10**9), "lossless", stop) as reader:
        for frame in reader:
            if frame.index == 20:
                stop.set()
    assert reader.produced >= 21

    class Lost(CountingSource):
        def read(self):
            if self.produced == 5:
                raise DataError("camera lost")
            return super().read()

    with FrameReader(Lost(100), "lossless") as reader:
        seen = []
        with pytest.raises(DataError, match="camera lost"):
            seen.extend(frame.index for frame in reader)
    assert seen == [0, 1, 2, 3, 4]


def test_reader_counts_a_stalled_source() -> None:
    class Stalling(CountingSource):
        def read(self):
            if self.produced == 2:
                time.sleep(0.5)
            return super().read()

    with FrameReader(Stalling(4), "lossless", stall_s=0.1) as reader:
        assert [frame.index for frame in reader] == [0, 1, 2, 3]
    assert reader.stalls >= 1


def test_live_sources_that_cannot_open_are_named_with_a_hint() -> None:
    with socket.socket() as probe:  # a local port nobody listens on: refused at once, no timeout
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for uri, hint in ((f"rtsp://127.0.0.1:{port}/line", "check the URL"),
                      (f"http://127.0.0.1:{port}/cam.mjpg", "check the URL"),
                      ("/dev/video99", "video group")):
        with pytest.raises(DataError, match=f"cannot open source {re.escape(uri)}: .*{hint}"):
            open_source(uri)


def test_source_location_names_the_files_a_source_reads_and_nothing_for_live_sources(tmp_path) -> None:
    from runtime.line.sources import source_location

    (tmp_path / "v.avi").write_bytes(b"")
    assert source_location(str(tmp_path / "v.avi")) == tmp_path / "v.avi"
    assert source_location(str(tmp_path)) == tmp_path
    assert source_location(str(tmp_path / "good" / "*" / "*.png")) == tmp_path / "good"
    for live in ("0", "/dev/video9", "csi://0?width=640", "rtsp://cam/stream?x=1", "videotestsrc ! appsink"):
        assert source_location(live) is None


def damaged_copies(tmp_path: Path, frames: int = 100) -> tuple[Path, Path, Path]:
    """A complete MJPG video, a copy cut in half, and a copy with 20 bytes inverted in its middle third."""
    whole = write_video(tmp_path / "whole.avi", [grey_frame(48, 64, blob=2 * index) for index in range(frames)])
    data = whole.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for position in np.random.default_rng(0).integers(len(data) // 3, 2 * len(data) // 3, 20):
        flipped[position] ^= 0xFF
    (tmp_path / "flipped.avi").write_bytes(bytes(flipped))
    return whole, tmp_path / "half.avi", tmp_path / "flipped.avi"


def plain_read_count(path: Path) -> int:
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    return count


def test_a_truncated_video_ends_early_with_a_warning_naming_expected_and_read(tmp_path) -> None:
    whole, half, _ = damaged_copies(tmp_path)
    complete = open_source(str(whole))
    assert len(read_all(complete)) == 100 and complete.warning is None and complete.read_errors == 0
    source = open_source(str(half))
    frames = read_all(source)
    assert source.frames_expected == 100 and 0 < len(frames) < 100
    assert source.warning == (f"source {half} ended after {len(frames)} of the 100 frames its header declares: "
                              "the file is truncated or damaged")


def test_a_bit_flipped_video_is_read_past_its_damaged_frames_and_they_are_counted(tmp_path) -> None:
    _, _, flipped = damaged_copies(tmp_path)
    stops_at = plain_read_count(flipped)  # where a plain read loop gives up
    source = open_source(str(flipped))
    frames = read_all(source)
    assert stops_at < 50 and len(frames) > stops_at + 40 and source.read_errors > 0
    assert len(frames) + source.read_errors >= 95
