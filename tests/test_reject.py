"""`--reject gpio:PIN[:PULSE_MS[:DELAY_MS]]`: pulses timed from capture, scheduled off the loop's thread.

The pin is a recording one (the interface runtime.plant.reject.JetsonPin implements); the
Jetson.GPIO adapter itself was not run on a Jetson here.
"""

from __future__ import annotations

import importlib.util
import math
import time

import cv2
import numpy as np
import pytest
from test_run_cli import calibrate
from test_sources import part_frames, write_video
from tiny_bundle import grey_frame

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.cli import main as daad
from runtime.errors import DaadError
from runtime.line.events import FAULT, NG, OK, EventLog
from runtime.line.live_threshold import Calibration
from runtime.line.loop import Outcome, RunStats, Scored, open_reader, run_loop
from runtime.line.sources import Frame, open_source
from runtime.plant.reject import RejectGate, RejectSpec, parse_reject, rejected_verdicts
from runtime.score_scale import ScoreScale


class RecordingPin:
    """A pin that records every level change with the time it happened."""

    def __init__(self) -> None:
        self.edges: list[tuple[bool, float]] = []
        self.closed = False

    def set(self, high: bool) -> None:
        self.edges.append((high, time.perf_counter()))

    def close(self) -> None:
        self.closed = True

    def pulses(self) -> list[tuple[float, float]]:
        """(rise, fall) times; the edges must alternate, starting high."""
        assert [high for high, _ in self.edges] == [True, False] * (len(self.edges) // 2)
        return [(self.edges[i][1], self.edges[i + 1][1]) for i in range(0, len(self.edges), 2)]


def outcome(verdict: str, captured_at: float) -> Outcome:
    frame = Frame(np.zeros((4, 4, 3), np.uint8), index=0, started_at=captured_at)
    return Outcome(frame, Scored(0.5 if verdict == NG else 0.1, None), verdict, Calibration(ScoreScale(0.3)))


def test_each_ng_part_gets_a_pulse_timed_from_its_capture() -> None:
    pin, base = RecordingPin(), time.perf_counter()
    gate = RejectGate(pin, pulse_s=0.03, delay_s=0.5)
    for verdict, captured in ((NG, base), (OK, base + 0.1), (NG, base + 0.2)):
        gate.emit(outcome(verdict, captured))
    assert pin.edges == []  # emit only scheduled: the first pulse is due half a second after capture
    gate.close()  # fires what is scheduled, then releases the pin
    (first_rise, first_fall), (second_rise, second_fall) = pin.pulses()
    assert first_rise >= base + 0.5 and second_rise >= base + 0.7  # never before the part reaches the gate
    assert first_fall - first_rise >= 0.03 and second_fall - second_rise >= 0.03
    assert pin.closed and gate.counts == {"rejects": 2, "rejects_late": 0}


def test_parts_closer_than_a_pulse_hold_the_pin_up_once() -> None:
    pin, base = RecordingPin(), time.perf_counter()
    gate = RejectGate(pin, pulse_s=0.2, delay_s=0.3)
    gate.emit(outcome(NG, base))
    gate.emit(outcome(NG, base + 0.05))
    gate.close()
    ((rise, fall),) = pin.pulses()
    assert fall >= base + 0.05 + 0.3 + 0.2 and gate.counts["rejects"] == 2


def test_a_verdict_later_than_its_reject_time_fires_at_once_and_is_counted() -> None:
    pin = RecordingPin()
    gate = RejectGate(pin, pulse_s=0.01, delay_s=0.2)
    gate.emit(outcome(NG, time.perf_counter() - 1.0))  # captured a second ago: 0.8 s too late for the gate
    gate.close()
    assert len(pin.pulses()) == 1 and gate.counts == {"rejects": 1, "rejects_late": 1}


def test_the_loop_rejects_every_ng_frame_of_a_run(tiny_bundle, tmp_path) -> None:
    bundle, pin = open_bundle(tiny_bundle), RecordingPin()
    gate = RejectGate(pin, pulse_s=0.001, delay_s=0.0)
    video = write_video(tmp_path / "line.avi", part_frames(12))
    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(None) as events, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader:
        stats = run_loop(reader, backend, bundle.preprocess, 0.3, "line", events, [gate], RunStats(every_s=0))
    gate.close()
    assert stats.verdicts[NG] == gate.counts["rejects"] == 3
    assert 1 <= len(pin.pulses()) <= 3 and pin.edges[-1][0] is False and pin.closed  # the pin ends low


@pytest.mark.parametrize("fault_action, pulsed", [("reject", ["crack.png", "damaged.png", "tiny.png"]),
                                                  ("pass", ["crack.png"])])
def test_a_damaged_frame_is_rejected_unless_faults_pass(fault_action, pulsed, tiny_bundle, tmp_path) -> None:
    """A part the station could not judge is not passed: a damaged and a too-small image pulse the pin."""
    folder = tmp_path / "parts"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), grey_frame(32, 32))
    cv2.imwrite(str(folder / "crack.png"), grey_frame(32, 32, blob=250))
    (folder / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG header, then nothing
    cv2.imwrite(str(folder / "tiny.png"), grey_frame(4, 4))
    bundle, pin = open_bundle(tiny_bundle), RecordingPin()
    gate = RejectGate(pin, pulse_s=0.001, delay_s=0.0, reject=rejected_verdicts(fault_action))
    seen = Recorder()
    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(None) as events, \
            open_reader(open_source(str(folder)), "lossless", bundle.preprocess) as reader:
        stats = run_loop(reader, backend, bundle.preprocess, 0.3, "parts", events, [gate, seen], RunStats(every_s=0))
    gate.close()
    assert stats.verdicts == {OK: 1, NG: 1, FAULT: 2} and stats.faults == {"bad_frame": 2}
    assert sorted(seen.names(gate.reject)) == pulsed and gate.counts["rejects"] == len(pulsed)
    assert 1 <= len(pin.pulses()) <= len(pulsed) and pin.edges[-1][0] is False


class Recorder:
    """A sink that keeps every outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def emit(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def names(self, verdicts: frozenset[str]) -> list[str]:
        return [outcome.frame.name for outcome in self.outcomes if outcome.verdict in verdicts]

    def close(self) -> None:
        pass


def test_fault_action_pass_without_a_reject_pin_is_refused(tiny_bundle, tmp_path, capsys) -> None:
    """It only changes what the reject pin does with a FAULT part: without --reject it was taken and did nothing."""
    calibrate(tiny_bundle)
    video = write_video(tmp_path / "line.avi", part_frames(2))
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video), "--fault-action", "pass"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["daad run: error: --fault-action pass says what the reject pin does with a FAULT part, and "
                     "this run has no --reject: add --reject gpio:PIN, or drop --fault-action pass"]


def test_reject_spec_and_its_errors() -> None:
    assert parse_reject("gpio:7") == RejectSpec(7, 50.0, 0.0)
    assert parse_reject("gpio:12:40:350") == RejectSpec(12, 40.0, 350.0)
    for text in ("gpio", "gpio:", "gpio:x", "plc:7", "gpio:7:40:350:1", "gpio:0", "gpio:7:0", "gpio:7:40:-1",
                 "gpio:7:nan", "gpio:7:inf", "gpio:7:40:nan", "gpio:7:40:inf"):
        with pytest.raises(DaadError, match="--reject"):
            parse_reject(text)
    assert math.isclose(parse_reject("gpio:7:2.5").pulse_ms, 2.5)


@pytest.mark.skipif(importlib.util.find_spec("Jetson") is not None, reason="Jetson.GPIO is installed here")
def test_reject_without_jetson_gpio_names_the_extra(tiny_bundle, tmp_path, capsys) -> None:
    calibrate(tiny_bundle)
    video = write_video(tmp_path / "line.avi", part_frames(2))
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video), "--reject", "gpio:7:40:350"]) == 2
    error = capsys.readouterr().err
    assert "Jetson.GPIO" in error and "daad-edge[jetson]" in error
