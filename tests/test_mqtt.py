"""`daad run --publish`: every event to a real mosquitto broker, in order, through outages, never blocking the loop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_broker import Subscriber, free_port, wait_for
from test_run_cli import ROOT, calibrate
from test_sources import part_frames, write_video

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.cli import main as daad
from runtime.errors import DaadError
from runtime.line.events import EventLog
from runtime.line.live_threshold import Calibration, LiveThreshold
from runtime.line.loop import RunStats, open_reader, run_loop
from runtime.line.sources import open_source
from runtime.plant.mqtt import SCHEMA_VERSION, MqttPublisher, parse_publish_url
from runtime.plant.spool import cursor_path
from runtime.score_scale import ScoreScale
from runtime.threshold import ThresholdRecord, history_entries, write_threshold

TOPIC = "plant/cap-1/verdict"


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def event_id(event: dict) -> str:
    return f"{event['run_id']}:{event['frame']}"


def first_seen(messages: list[tuple[str, dict]]) -> list[str]:
    """Event ids in the order they first arrived (QoS 1 may repeat one)."""
    order: dict[str, None] = {}
    for _, message in messages:
        order.setdefault(message["event_id"], None)
    return list(order)


@pytest.fixture
def subscriber(mqtt_broker):
    client = Subscriber(mqtt_broker.port, "plant/#")
    yield client
    client.close()


def run_argv(bundle: Path, video: Path, events: Path, port: int, *extra: str) -> list[str]:
    return ["run", "--bundle", str(bundle), "--source", str(video), "--events", str(events), "--threads", "1",
            "--publish", f"mqtt://127.0.0.1:{port}/plant", "--station", "cap-1", *extra]


def test_every_event_reaches_the_broker_with_station_schema_and_id(tiny_bundle, tmp_path, mqtt_broker, subscriber,
                                                                   capsys) -> None:
    calibrate(tiny_bundle)
    video, events = write_video(tmp_path / "line.avi", part_frames(12)), tmp_path / "events.jsonl"
    assert daad(run_argv(tiny_bundle, video, events, mqtt_broker.port)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["published"] == 12 and summary["pending"] == 0 and summary["station"] == "cap-1"
    lines = read_events(events)
    wait_for(lambda: len(subscriber.received()) >= 12, what="12 messages")
    received = subscriber.received()
    assert {topic for topic, _ in received} == {TOPIC} and first_seen(received) == [event_id(e) for e in lines]
    message = received[0][1]
    assert message == {"schema_version": SCHEMA_VERSION, "event_id": event_id(lines[0]), "station": "cap-1",
                       **lines[0]}
    assert json.loads(cursor_path(events).read_text())["offset"] == events.stat().st_size


def test_messages_carry_the_readable_score_and_the_threshold_entry_that_judged(tiny_bundle, tmp_path, mqtt_broker,
                                                                            subscriber) -> None:
    """A PLC reads how far a part was from the threshold (index 50) without reading threshold.json."""
    bundle = open_bundle(tiny_bundle)
    stats = {"good": {"median": 0.1, "min": 0.0, "max": 0.2}}
    write_threshold(bundle, ThresholdRecord(threshold=0.3, model_sha256=bundle.sha256, backend="onnxruntime",
                                            precision="fp32", score_stats=stats))
    video, events = write_video(tmp_path / "line.avi", part_frames(8)), tmp_path / "events.jsonl"
    assert daad(run_argv(tiny_bundle, video, events, mqtt_broker.port)) == 0
    wait_for(lambda: len(subscriber.received()) >= 8, what="8 messages")
    messages = [message for _, message in subscriber.received()]
    scale = ScoreScale(0.3, 0.1)
    entry = history_entries(bundle)[-1].stem
    assert SCHEMA_VERSION == 2 and {message["schema_version"] for message in messages} == {2}
    assert {message["threshold_id"] for message in messages} == {entry}
    for message in messages:
        assert message["index"] == scale.readable(message["score"])
        assert (message["index"] > 50) == (message["verdict"] == "NG")


def test_broker_stopped_and_restarted_mid_run_loses_no_event(tiny_bundle, tmp_path, mqtt_broker, subscriber) -> None:
    """The broker goes away for frames 10-29 and comes back while the run goes on: every event arrives, in order."""
    bundle, events = open_bundle(tiny_bundle), tmp_path / "events.jsonl"
    video = write_video(tmp_path / "line.avi", part_frames(60))
    settings = parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "cap-1")

    def with_an_outage(frames):
        for frame in frames:
            if frame.index == 10:
                wait_for(lambda: len(subscriber.received()) >= 5, what="messages before the outage")
                mqtt_broker.stop()
            if frame.index == 30:
                assert publisher.counts["pending"] >= 20  # the loop went on without the broker
                mqtt_broker.start()
            yield frame

    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(events, "run-a") as log, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader:
        publisher = MqttPublisher(settings, events)
        stats = run_loop(with_an_outage(reader), backend, bundle.preprocess, 0.3, "line", log, [publisher],
                         RunStats(every_s=0))
        wait_for(lambda: publisher.counts["pending"] == 0, what="the publisher to catch up after the restart")
        publisher.close()
    assert stats.frames == 60 and publisher.counts == {"published": 60, "pending": 0, "broker_unreachable": 0}
    wait_for(lambda: len(subscriber.event_ids()) >= 60, what="every event at the subscriber")
    received = subscriber.received()
    assert first_seen(received) == [f"run-a:{index}" for index in range(60)]
    copies: dict[str, dict] = {}
    for _, message in received:  # a repeat (at-least-once) is the same message under the same id
        assert copies.setdefault(message["event_id"], message) == message


def test_events_of_a_run_without_broker_are_sent_by_the_next_run(tiny_bundle, tmp_path, mqtt_broker,
                                                                  subscriber, capsys) -> None:
    calibrate(tiny_bundle)
    video, events = write_video(tmp_path / "line.avi", part_frames(8)), tmp_path / "events.jsonl"
    mqtt_broker.stop()
    assert daad(run_argv(tiny_bundle, video, events, mqtt_broker.port)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["published"] == 0 and first["pending"] == 8  # the run did not wait for the broker
    mqtt_broker.start()
    assert daad(run_argv(tiny_bundle, video, events, mqtt_broker.port, "--max-frames", "3")) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["published"] == 11 and second["pending"] == 0
    wait_for(lambda: len(subscriber.event_ids()) >= 11, what="both runs' events")
    assert first_seen(subscriber.received()) == [event_id(event) for event in read_events(events)]
    # A crash after sending but before the cursor was saved: the next run sends those lines again,
    # under the same event ids, so the plant can drop the repeats.
    cursor_path(events).write_text(json.dumps({**json.loads(cursor_path(events).read_text()), "offset": 0}))
    assert daad(run_argv(tiny_bundle, video, events, mqtt_broker.port, "--max-frames", "1")) == 0
    assert json.loads(capsys.readouterr().out)["published"] == 12
    wait_for(lambda: len(subscriber.received()) >= 23, what="the repeats")
    ids = [message["event_id"] for _, message in subscriber.received()]
    assert len(ids) == 23 and len(set(ids)) == 12 and ids[11:22] == ids[:11]


def test_publish_needs_an_events_file_and_a_well_formed_url(tiny_bundle, tmp_path, capsys) -> None:
    calibrate(tiny_bundle)
    video = write_video(tmp_path / "line.avi", part_frames(2))
    base = ["run", "--bundle", str(tiny_bundle), "--source", str(video)]
    assert daad([*base, "--publish", "mqtt://127.0.0.1:1883/plant"]) == 2
    assert "--publish needs --events" in capsys.readouterr().err
    for url in ("http://broker/plant", "mqtt://broker", "mqtt://broker/plant/#"):
        with pytest.raises(DaadError, match="expected mqtt://HOST"):
            parse_publish_url(url, "cap-1")
    with pytest.raises(DaadError, match="--station"):
        parse_publish_url("mqtt://broker/plant", "line/1")
    settings = parse_publish_url("mqtts://broker.plant/inspection", "cap-1", username="daad", password="secret")
    assert (settings.port, settings.tls, settings.verdict_topic) == (8883, True, "inspection/cap-1/verdict")


def test_a_threshold_switch_is_published_under_its_own_id(tiny_bundle, tmp_path, mqtt_broker, subscriber) -> None:
    """Through a real broker: the switch line gets its own id beside its frame's verdict, and pending counts it."""
    bundle, events = open_bundle(tiny_bundle), tmp_path / "events.jsonl"
    video = write_video(tmp_path / "line.avi", part_frames(8))
    live = LiveThreshold(0.3, "threshold.json")

    def switching_at_frame_4(frames):
        for frame in frames:
            if frame.index == 4:
                live.set(Calibration(ScoreScale(0.9)), "console save by anna")
            yield frame

    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(events, "run-b") as log, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader:
        publisher = MqttPublisher(parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "cap-1"), events)
        run_loop(switching_at_frame_4(reader), backend, bundle.preprocess, live, "line", log, [publisher],
                 RunStats(every_s=0))
        wait_for(lambda: publisher.counts["pending"] == 0, what="the publisher")
        publisher.close()
    assert publisher.counts == {"published": 9, "pending": 0, "broker_unreachable": 0}  # 8 verdicts and the switch
    wait_for(lambda: len(subscriber.event_ids()) >= 9, what="9 messages")
    ids = first_seen(subscriber.received())
    assert ids[:4] == [f"run-b:{i}" for i in range(4)] and ids[4] == "run-b:4:threshold_switch"
    assert ids[5:] == [f"run-b:{i}" for i in range(4, 8)]


def test_an_events_file_deleted_mid_run_is_recreated_said_and_still_published(tiny_bundle, tmp_path, mqtt_broker,
                                                                             subscriber, caplog) -> None:
    """The events file is also the spool: deleted under the run, it comes back and publishing follows it."""
    bundle, events = open_bundle(tiny_bundle), tmp_path / "events.jsonl"
    video = write_video(tmp_path / "line.avi", part_frames(12))

    def deleting_at_frame_5(frames):
        for frame in frames:
            if frame.index == 5:
                wait_for(lambda: publisher.counts["pending"] == 0, what="the first five published")
                events.unlink()  # a careless rm
            yield frame

    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(events, "run-d") as log, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader, caplog.at_level("WARNING"):
        publisher = MqttPublisher(parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "cap-1"), events)
        run_loop(deleting_at_frame_5(reader), backend, bundle.preprocess, 0.3, "line", log, [publisher],
                 RunStats(every_s=0))
        wait_for(lambda: publisher.counts["pending"] == 0, what="the publisher")
        publisher.close()
    assert [line["frame"] for line in read_events(events)] == list(range(5, 12))
    assert log.lost == 5 and "deleted or replaced during the run: the 5 event line(s)" in log.warning
    assert any("was deleted or replaced" in record.getMessage() for record in caplog.records)
    assert publisher.counts == {"published": 12, "pending": 0, "broker_unreachable": 0}
    wait_for(lambda: len(subscriber.event_ids()) >= 12, what="12 messages")
    assert first_seen(subscriber.received()) == [f"run-d:{i}" for i in range(12)]


@pytest.mark.parametrize("host, why", [("127.0.0.1", "nothing accepted a connection there"),
                                       ("no-such-broker.invalid", "the host name does not resolve")])
def test_an_unreachable_broker_is_said_on_stderr_in_the_stats_line_and_the_summary(host, why, tiny_bundle,
                                                                                   tmp_path) -> None:
    """A wrong port or an unknown host: within 10 s the run says so three ways, instead of only `pending` growing."""
    calibrate(tiny_bundle)
    video, events = write_video(tmp_path / "line.avi", part_frames(8)), tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "runtime", *run_argv(tiny_bundle, video, events, free_port()), "--loop",
               "--stats-every", "0.5"]
    command[command.index("--publish") + 1] = command[command.index("--publish") + 1].replace("127.0.0.1", host)
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    try:
        for line in process.stderr:
            said.append(line)
            if "broker_unreachable 1" in line:  # a stats line after the warning
                break
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    warning = next(line for line in said if "no connection to the broker" in line)
    assert why in warning and host in warning and str(events) in warning
    summary = json.loads(out)
    assert summary["broker_unreachable"] == 1 and summary["pending"] > 0
    assert any(why in text for text in summary["warnings"])
    before = [line for line in said[:said.index(warning)] if " fps | " in line]  # stats lines, 0.5 s apart
    assert len(before) < 2 * 10  # said within 10 s of the loop's start


def test_the_summary_says_when_an_unreachable_broker_answered_instead_of_a_stale_warning(tiny_bundle, tmp_path,
                                                                                          mqtt_broker) -> None:
    """The broker is down when the run starts and answers later: the summary's warning said it was still unreachable."""
    bundle, events = open_bundle(tiny_bundle), tmp_path / "events.jsonl"
    video = write_video(tmp_path / "line.avi", part_frames(6))
    settings = parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "cap-1")
    mqtt_broker.stop()
    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(events, "run-u") as log, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader:
        publisher = MqttPublisher(settings, events, unreachable_s=0.2)
        run_loop(reader, backend, bundle.preprocess, 0.3, "line", log, [publisher], RunStats(every_s=0))
        wait_for(lambda: publisher.counts["broker_unreachable"] == 1, what="the broker to count as unreachable")
        still = publisher.warning
        mqtt_broker.start()
        wait_for(lambda: publisher.counts == {"published": 6, "pending": 0, "broker_unreachable": 0},
                 what="the publisher to catch up once the broker answers")
        publisher.close()
    broker = f"the broker 127.0.0.1:{mqtt_broker.port}"
    assert still.startswith(f"--publish: no connection to {broker} since ") and "still none at the end" in still
    said = re.fullmatch(rf"--publish: {broker} was unreachable from (\S+) until it answered at (\S+) "
                        r"\(nothing accepted a connection there: .*\); publishing resumed then", publisher.warning)
    assert said is not None and said[1] <= said[2]  # ISO times in UTC, the outage's start first


def test_port_0_is_refused_not_taken_for_the_default(tiny_bundle, tmp_path, capsys) -> None:
    calibrate(tiny_bundle)
    video, events = write_video(tmp_path / "line.avi", part_frames(2)), tmp_path / "events.jsonl"
    assert daad(run_argv(tiny_bundle, video, events, 0)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("daad run: error: --publish mqtt://127.0.0.1:0/plant: port 0 is "
                                                   "no broker's port")
    assert error[0].endswith("e.g. mqtt://127.0.0.1:1883/plant") and not events.exists()  # before anything ran
    assert parse_publish_url("mqtt://broker/plant", "cap-1").port == 1883  # no port given: the default
