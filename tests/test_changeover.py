"""Product changeover on a running line: real tiny bundles in real ONNX Runtime, a real loop in its own
thread, the real console over HTTP, `daad switch`, and a real mosquitto broker for the command topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
import pytest
from mqtt_broker import Subscriber, wait_for
from test_run_cli import calibrate
from test_sources import part_frames, write_video
from threaded_line import Judged, ThreadedLine
from tiny_bundle import grey_frame, write_tiny_bundle

from runtime.backends.options import BackendOptions
from runtime.bundle import METADATA_FILE, MODEL_FILE
from runtime.cli import main as daad
from runtime.line.changeover import CommandError, parse_command
from runtime.line.events import EventLog
from runtime.line.loop import RunStats, Sink, run_line
from runtime.line.products import ProductError, ProductLine, open_product
from runtime.line.sources import Frame

ONE_THREAD = BackendOptions("onnxruntime", "fp32", threads=1)
TOKEN = "s3cret"
SIZE = 32


def make_products(folder: Path, thresholds: dict[str, float]) -> Path:
    """One calibrated tiny bundle per product; a blob part scores ~0.48, a plain one ~0."""
    for name, threshold in thresholds.items():
        calibrate(write_tiny_bundle(folder / name, SIZE, SIZE), threshold)
    return folder


@pytest.fixture
def products(tmp_path) -> Path:
    """Product a rejects a blob (threshold 0.3); product b passes it (0.9)."""
    return make_products(tmp_path / "products", {"a": 0.3, "b": 0.9})


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Line(ThreadedLine):
    """A real line in its own thread: frames judged by run_line over a ProductLine, logged to `events`;
    every part is `part` (default: a 32 x 32 frame with a blob)."""

    def __init__(self, line: ProductLine, events: Path, part: np.ndarray | None = None,
                 sinks: Sequence[Sink] = ()) -> None:
        self.line, self.events, self.sinks = line, events, list(sinks)
        self.part = grey_frame(SIZE, SIZE, blob=250) if part is None else part
        self.stats = RunStats(every_s=0)
        self.start()

    def judge(self, frames: Iterator[Frame], judged: Judged) -> None:
        with EventLog(self.events, "run-c") as log:
            run_line(frames, self.line, "test", log, [*self.sinks, judged], self.stats)

    def run(self, count: int, part: Callable[[int], np.ndarray] | None = None) -> None:
        """`count` parts, made by `part(index)` or else the line's `part` (by default with a blob: NG under product
        a, OK under b)."""
        first = self.next_index
        self.feed((self.part if part is None else part(index), f"p{index}") for index in range(first, first + count))

    def stop(self) -> None:
        super().stop()
        self.line.close()

    def judged_by(self) -> list[tuple[str, str]]:
        """(product, verdict) of every frame line, in order."""
        return [(event["product"], event["verdict"]) for event in read_events(self.events) if "verdict" in event]

    def switches(self) -> list[dict]:
        return [event for event in read_events(self.events) if event.get("event") == "product_switch"]


@pytest.fixture
def line(products, tmp_path) -> Iterator[Line]:
    running = Line(ProductLine(open_product(products, "a", ONE_THREAD), products, ONE_THREAD), tmp_path / "e.jsonl")
    yield running
    running.stop()


def test_a_switch_takes_effect_at_the_next_frame_and_every_frame_is_judged_and_named(line) -> None:
    line.run(3)
    product = line.line.switch("b", "test switch by anna")
    assert product.name == "b" and line.line.state()["pending"] == "b"
    line.run(4)
    events = read_events(line.events)
    assert [event.get("frame") for event in events] == [0, 1, 2, 3, 3, 4, 5, 6]  # the switch line names frame 3
    switch = events[3]
    assert switch["event"] == "product_switch" and (switch["product"], switch["previous"]) == ("b", "a")
    assert switch["threshold"] == 0.9 and switch["origin"] == "test switch by anna" and switch["run_id"] == "run-c"
    assert line.judged_by() == [("a", "NG")] * 3 + [("b", "OK")] * 4
    assert [event["threshold"] for event in events if "verdict" in event] == [0.3] * 3 + [0.9] * 4
    assert line.line.state() == {"current": "b", "previous": "a", "pending": None, "products": ["a", "b"]}


def test_rolling_back_is_one_call_to_the_product_as_it_ran_without_loading_it(line) -> None:
    with pytest.raises(ProductError, match="no product to roll back to"):
        line.line.roll_back("test roll back")
    first = line.line.current
    line.line.switch("b", "test switch")
    line.run(2)
    assert line.line.roll_back("test roll back by anna") is first  # the same open product: nothing loaded
    line.run(2)
    assert line.judged_by() == [("b", "OK")] * 2 + [("a", "NG")] * 2
    assert [(s["product"], s["origin"]) for s in line.switches()] == [("b", "test switch"),
                                                                       ("a", "test roll back by anna")]
    line.line.roll_back("again")  # and back once more: the roll back of a roll back
    line.run(1)
    assert line.judged_by()[-1] == ("b", "OK")


def test_switching_to_the_product_on_the_line_reloads_it_from_disk(products, line) -> None:
    """A product re-calibrated on disk (or re-taught) is taken by switching to it again; the old copy is the roll back."""
    calibrate(products / "a", 0.9)
    line.run(1)
    line.line.switch("a", "test reload")
    line.run(1)
    line.line.roll_back("test roll back")
    line.run(1)
    assert line.judged_by() == [("a", "NG"), ("a", "OK"), ("a", "NG")]
    assert [(s["product"], s["previous"], s["threshold"]) for s in line.switches()] == [("a", "a", 0.9),
                                                                                       ("a", "a", 0.3)]


def test_a_switch_overtaken_before_any_frame_logs_only_the_one_that_judges(products, line) -> None:
    make_products(products, {"c": 0.4})
    line.line.switch("b", "first")
    line.line.switch("c", "second")
    line.run(1)
    assert [(s["product"], s["previous"]) for s in line.switches()] == [("c", "a")]
    assert line.judged_by() == [("c", "NG")]


def broken_checksum(folder: Path) -> None:
    with open(folder / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")


def no_threshold(folder: Path) -> None:
    (folder / "threshold.json").unlink()


def cannot_score(folder: Path) -> None:
    """A model that loads, matches model.json and has the contract's outputs, but scores every frame NaN."""
    from onnx import numpy_helper

    from runtime.bundle import file_sha256

    model = onnx.load(str(folder / MODEL_FILE))
    centre = next(tensor for tensor in model.graph.initializer if tensor.name == "centre")
    centre.CopyFrom(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "centre"))
    onnx.save(model, str(folder / MODEL_FILE))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata["onnx_sha256"] = file_sha256(folder / MODEL_FILE)
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    calibrate(folder, 0.3)


@pytest.mark.parametrize("damage, said", [
    (broken_checksum, "sha256"),
    (no_threshold, "threshold.json is missing"),
    (cannot_score, "did not score a test frame"),
])
def test_a_product_that_fails_to_load_is_refused_and_the_line_keeps_its_product(products, line, damage, said) -> None:
    make_products(products, {"broken": 0.3})
    damage(products / "broken")
    line.run(2)
    with pytest.raises(ProductError, match=said) as refused:
        line.line.switch("broken", "test switch")
    assert "'broken'" in str(refused.value) and "\n" not in str(refused.value)
    line.run(2)
    assert line.judged_by() == [("a", "NG")] * 4 and line.switches() == []
    assert line.line.state()["pending"] is None


def test_a_product_of_another_input_size_or_an_unknown_one_is_refused(products, line) -> None:
    write_tiny_bundle(products / "small", 16, 16)
    calibrate(products / "small", 0.3)
    with pytest.raises(ProductError, match=r"takes 16x16 BGR .* this line 32x32 BGR"):
        line.line.switch("small", "test")
    with pytest.raises(ProductError, match=r"no product 'nope' in .*: its products are a, b, small"):
        line.line.switch("nope", "test")
    with pytest.raises(ProductError, match="no product '../a'"):
        line.line.switch("../a", "test")
    line.run(1)
    assert line.judged_by() == [("a", "NG")]


@pytest.mark.parametrize("data, said", [
    ([], "a command is a JSON object"),
    ({"action": "dance"}, "action must be 'switch' or 'rollback'"),
    ({"action": "switch"}, "a switch names its product"),
    ({"action": "switch", "product": 7}, "a switch names its product"),
    ({"action": "rollback", "product": "a"}, "a roll back takes no product"),
    ({"action": "rollback", "by": 5}, "'by' must be a name"),
    ({"action": "rollback", "sudo": True}, "unknown field(s) 'sudo'"),
])
def test_a_malformed_command_is_refused_saying_what_was_wrong(data, said) -> None:
    with pytest.raises(CommandError) as refused:
        parse_command(data)
    assert said in str(refused.value)


# -- daad run --products --------------------------------------------------------------------------------

def test_daad_run_starts_on_the_chosen_product_and_names_it_on_every_line(products, tmp_path, capsys) -> None:
    video, events = write_video(tmp_path / "line.avi", part_frames(6, SIZE, SIZE)), tmp_path / "events.jsonl"
    argv = ["run", "--products", str(products), "--source", str(video), "--threads", "1", "--events", str(events)]
    assert daad(argv + ["--product", "b", "--stats-every", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["product"], summary["products"], summary["threshold"]) == ("b", str(products), 0.9)
    assert {event["product"] for event in read_events(events)} == {"b"} and len(read_events(events)) == 6
    assert summary["products_run"] == ["b"] and summary["judged_by"] == [
        {"product": "b", "threshold": 0.9, "threshold_id": read_events(events)[0]["threshold_id"], "frames": 6,
         "first_frame": 0, "last_frame": 5}]


def test_a_restart_on_the_same_events_resumes_the_product_the_line_was_on(products, tmp_path, capsys) -> None:
    video, events = write_video(tmp_path / "line.avi", part_frames(3, SIZE, SIZE)), tmp_path / "events.jsonl"
    argv = ["run", "--products", str(products), "--source", str(video), "--threads", "1", "--events", str(events),
            "--stats-every", "0"]
    assert daad(argv + ["--product", "b"]) == 0
    with open(events, "a") as handle:
        handle.write('{"frame": 3, "verdict": "OK", "prod')  # torn by a kill mid-write
    capsys.readouterr()
    assert daad(argv) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["product"] == "b" and "resuming product b, the last one in --events" in said.err
    assert daad(argv + ["--product", "a"]) == 0  # --product wins
    capsys.readouterr()
    (products / "a").rename(tmp_path / "a-retired")
    assert daad(argv) == 2
    assert "ends on product 'a', which --products" in capsys.readouterr().err


@pytest.mark.parametrize("extra, said", [
    ([], "holds 2 products (a, b): choose the one to start on with --product NAME"),
    (["--product", "z"], "no product 'z' in"),
    (["--product", "a", "--threshold", "0.5"], "--threshold is a trial of one --bundle"),
    (["--product", "a", "--events", "{products}/a/events.jsonl"], "lies inside --products"),
])
def test_daad_run_refuses_an_unclear_start_in_one_line(products, tmp_path, capsys, extra, said) -> None:
    video = write_video(tmp_path / "line.avi", part_frames(2, SIZE, SIZE))
    extra = [arg.format(products=products) for arg in extra]
    assert daad(["run", "--products", str(products), "--source", str(video), *extra]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert not (products / "a" / "events.jsonl").exists()


def test_product_without_products_is_refused(tiny_bundle, tmp_path, capsys) -> None:
    video = write_video(tmp_path / "line.avi", part_frames(2, SIZE, SIZE))
    assert daad(["run", "--bundle", str(tiny_bundle), "--product", "a", "--source", str(video)]) == 2
    assert "--product chooses among --products DIR" in capsys.readouterr().err


# -- the MQTT command topic -------------------------------------------------------------------------------

def test_mqtt_commands_with_the_token_switch_and_roll_back_and_anything_else_is_refused(products, line, mqtt_broker):
    from runtime.plant.commands import MqttCommands
    from runtime.plant.mqtt import parse_publish_url

    make_products(products, {"broken": 0.3})
    broken_checksum(products / "broken")
    settings = parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "cap-1")
    commands = MqttCommands(settings, line.line, TOKEN)
    plc = Subscriber(mqtt_broker.port, "plant/cap-1/command/reply")
    try:
        wait_for(commands.listening.is_set, what="the command subscription")

        def send(payload, request_id) -> dict:
            text = payload if isinstance(payload, str) else json.dumps({**payload, "id": request_id})
            plc.client.publish("plant/cap-1/command", text, qos=1)
            wait_for(lambda: any(r["id"] == request_id for _, r in plc.received()), what=f"reply {request_id}")
            return next(reply for _, reply in plc.received() if reply["id"] == request_id)

        line.run(2)
        reply = send({"action": "switch", "product": "b", "by": "plc-7", "token": TOKEN}, 1)
        assert reply["ok"] and reply["pending"] == "b" and "'b' is loaded and checked" in reply["message"]
        line.run(2)
        refused = [send({"action": "switch", "product": "a", "token": "guess"}, 2),
                   send({"action": "switch", "product": "a"}, 3),
                   send({"action": "dance", "token": TOKEN}, 4),
                   send({"action": "switch", "product": "broken", "token": TOKEN}, 5)]
        assert [r["ok"] for r in refused] == [False] * 4 and {r["product"] for r in refused} == {"b"}
        assert "wrong or missing token" in refused[0]["message"] and "wrong or missing token" in refused[1]["message"]
        assert "action must be" in refused[2]["message"] and "sha256" in refused[3]["message"]
        plc.client.publish("plant/cap-1/command", b"\xff not json", qos=1)
        wait_for(lambda: any(r["id"] is None for _, r in plc.received()), what="the reply to a message that is no JSON")
        line.run(1)
        assert send({"action": "rollback", "by": "plc-7", "token": TOKEN}, 6)["ok"]
        line.run(1)
        assert line.judged_by() == [("a", "NG")] * 2 + [("b", "OK")] * 3 + [("a", "NG")]
        assert [s["origin"] for s in line.switches()] == ["mqtt switch by plc-7", "mqtt roll back by plc-7"]
        assert commands.counts == {"commands_refused": 5}
    finally:
        plc.close()
        commands.close()


def test_mqtt_commands_are_all_refused_when_the_run_has_no_console_token(products, line, mqtt_broker) -> None:
    from runtime.plant.commands import MqttCommands
    from runtime.plant.mqtt import parse_publish_url

    commands = MqttCommands(parse_publish_url(f"mqtt://127.0.0.1:{mqtt_broker.port}/p", "s"), line.line, None)
    try:
        reply = commands.handle(json.dumps({"action": "switch", "product": "b", "token": ""}).encode())
        assert not reply["ok"] and "--console-token" in reply["message"] and line.line.state()["pending"] is None
    finally:
        commands.close()


# -- the console and `daad switch` ---------------------------------------------------------------------------

@pytest.fixture
def console_url(line) -> Iterator[str]:
    """The console of `line` served over real HTTP, as `daad run --products ... --console` serves it."""
    pytest.importorskip("uvicorn", reason="the console's extra is not installed")
    from console.actions import Console
    from console.routes import build_app
    from console.server import Address, ConsoleServer

    first = line.line.current
    server = ConsoleServer(build_app(Console(first.bundle, ONE_THREAD, TOKEN, None, first.threshold, None, line.line)),
                           Address("127.0.0.1", 0))
    yield server.address.url()
    server.close()


def test_daad_switch_changes_the_product_through_the_console_and_rolls_it_back(line, console_url, capsys,
                                                                               monkeypatch) -> None:
    assert daad(["switch", "--console", console_url, "--token", TOKEN, "b", "--by", "anna"]) == 0
    said = capsys.readouterr()
    assert "'b' is loaded and checked" in said.err and "on the line: a; roll back to: None; loaded for the next " \
        "frame: b" in said.out
    line.run(2)
    monkeypatch.setenv("DAAD_CONSOLE_TOKEN", TOKEN)
    assert daad(["switch", "--console", console_url, "--rollback", "--by", "anna"]) == 0
    assert "back to product 'a' as it ran" in capsys.readouterr().err
    line.run(1)
    assert line.judged_by() == [("b", "OK")] * 2 + [("a", "NG")]
    assert [s["origin"] for s in line.switches()] == ["console switch by anna", "console roll back by anna"]
    capsys.readouterr()
    assert daad(["switch", "--console", console_url, "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["* a", "< b"]


@pytest.mark.parametrize("argv, said", [
    (["b", "--token", "guess"], "the console refused: this change needs the console token"),
    (["nope", "--token", TOKEN], "the console refused: no product 'nope' in"),
    (["--rollback", "--token", TOKEN], "the console refused: no product to roll back to"),
    (["b"], "a switch needs the console's token: --token SECRET or the environment variable DAAD_CONSOLE_TOKEN"),
    ([], "give one of: a PRODUCT to switch to, --rollback, or --list"),
    (["b", "--rollback", "--token", TOKEN], "give one of"),
])
def test_daad_switch_refusals_are_one_line_and_change_nothing(line, console_url, capsys, monkeypatch, argv,
                                                              said) -> None:
    monkeypatch.delenv("DAAD_CONSOLE_TOKEN", raising=False)
    assert daad(["switch", "--console", console_url, *argv]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert line.line.state()["pending"] is None


def test_daad_switch_says_when_no_console_answers(capsys) -> None:
    from mqtt_broker import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert daad(["switch", "--console", url, "--token", TOKEN, "b"]) == 2
    assert "no console answers at" in capsys.readouterr().err


def test_the_live_page_shows_the_product_on_the_line_and_its_calibration(products, line, console_url) -> None:
    httpx = pytest.importorskip("httpx")
    from runtime.bundle import open_bundle
    from runtime.threshold import ThresholdRecord, write_threshold

    b = open_bundle(products / "b")
    write_threshold(b, ThresholdRecord(threshold=0.8, model_sha256=b.sha256, backend="onnxruntime", precision="fp32",
                                       note="blue caps"))
    line.line.switch("b", "test")
    line.run(1)
    state = httpx.get(f"{console_url}/api/live", timeout=30).json()
    assert state["threshold"] == 0.8 and state["products"]["current"] == "b"
    assert state["calibrated"]["note"] == "blue caps"


def test_the_console_api_checks_the_token_and_the_command(line, console_url) -> None:
    httpx = pytest.importorskip("httpx")
    command = {"action": "switch", "product": "b"}
    assert httpx.post(f"{console_url}/api/product", json=command, timeout=30).status_code == 401
    refused = httpx.post(f"{console_url}/api/product", json={"action": "dance"}, headers={"X-Console-Token": TOKEN},
                         timeout=30)
    assert refused.status_code == 400 and "action must be" in refused.json()["error"]
    assert line.line.state()["pending"] is None
    answer = httpx.post(f"{console_url}/api/product", json=command, headers={"X-Console-Token": TOKEN}, timeout=30)
    assert answer.status_code == 200 and answer.json()["pending"] == "b"


def test_a_console_of_one_bundle_has_no_products_to_change(tiny_bundle) -> None:
    pytest.importorskip("starlette", reason="the console's extra is not installed")
    from starlette.testclient import TestClient

    from console.actions import Console
    from console.routes import build_app
    from runtime.bundle import open_bundle

    client = TestClient(build_app(Console(open_bundle(tiny_bundle), ONE_THREAD, TOKEN)))
    refused = client.get("/api/products")
    assert refused.status_code == 400 and "--products DIR" in refused.json()["error"]


# -- all of it in a real `daad run` --------------------------------------------------------------------------

def test_a_running_line_changes_over_from_daad_switch_and_back_from_mqtt_losing_no_frame(products, tmp_path,
                                                                                        mqtt_broker) -> None:
    """`daad run --products` in its own process, judging camera-sized parts from a folder in a loop: `daad switch`
    hands it product b through the console, a PLC rolls it back to a over MQTT with the console's token; every
    frame is judged once, by the product in force, and the switch lines sit at the boundaries."""
    import re
    import signal
    import subprocess
    import sys

    import cv2

    pytest.importorskip("uvicorn", reason="the console's extra is not installed")
    from test_prometheus import scrape  # skips where prometheus-client (extra `plant`) is missing

    parts, events = tmp_path / "parts", tmp_path / "events.jsonl"
    parts.mkdir()
    for index in range(4):  # 640x480 PNGs: decoding paces the loop at a few hundred frames a second
        cv2.imwrite(str(parts / f"p{index}.png"), grey_frame(480, 640, blob=250 if index % 2 else None))
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", "--products", str(products), "--product", "a", "--source", str(parts),
         "--loop", "--threads", "1", "--stats-every", "0", "--events", str(events), "--console", "0",
         "--console-token", TOKEN, "--publish", f"mqtt://127.0.0.1:{mqtt_broker.port}/plant", "--station", "cap-1",
         "--metrics-port", "0", "--metrics-host", "127.0.0.1"],
        cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    plc = Subscriber(mqtt_broker.port, "plant/cap-1/#")
    try:
        said = ""
        for line in iter(process.stderr.readline, ""):  # the console, the metrics, and the commands subscribed
            said += line
            if "daad console:" in said and "metrics on" in said and "taking product changeover commands" in said:
                break
        url = re.search(r"daad console: (http://127\.0\.0\.1:\d+)", said)[1]
        metrics = re.search(r"metrics on (http://\S+/metrics)", said)[1]

        def switched_to(name: str) -> bool:
            return any(event.get("product") == name and event.get("event") == "product_switch"
                       for event in read_events(events))

        assert daad(["switch", "--console", url, "--token", TOKEN, "b", "--by", "anna"]) == 0
        wait_for(lambda: switched_to("b"), what="the switch to b")
        wait_for(lambda: sum(e.get("product") == "b" for e in read_events(events)) > 20, what="parts judged as b")
        scraped = scrape(metrics)
        station = next(dict(labels) for (name, labels), _ in scraped.items() if name == "daad_station_info")
        assert station["product"] == "b" and station["bundle"] == str(products / "b")
        assert scraped[("daad_threshold", ())] == 0.9
        plc.client.publish("plant/cap-1/command", json.dumps({"action": "rollback", "by": "plc-7", "token": TOKEN,
                                                              "id": "r1"}), qos=1)
        wait_for(lambda: switched_to("a"), what="the roll back to a")
        wait_for(lambda: len(read_events(events)) > 60 + max(i for i, e in enumerate(read_events(events))
                                                            if e.get("event")), what="parts judged after it")
        wait_for(lambda: any(m.get("event") == "product_switch" for _, m in plc.received()), what="the switch message")
        reply = next(m for topic, m in plc.received() if topic == "plant/cap-1/command/reply")
        assert reply["ok"] and reply["id"] == "r1"
    finally:
        plc.close()
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    summary = json.loads(out)
    lines = read_events(events)
    frames = [event for event in lines if "verdict" in event]
    assert [event["frame"] for event in frames] == list(range(len(frames))) == list(range(summary["frames"]))
    switches = [(index, event) for index, event in enumerate(lines) if event.get("event") == "product_switch"]
    assert [(e["product"], e["previous"], e["origin"]) for _, e in switches] == [
        ("b", "a", "console switch by anna"), ("a", "b", "mqtt roll back by plc-7")]
    for index, switch in switches:  # logged just before the first frame it judges
        assert lines[index + 1]["frame"] == switch["frame"] and lines[index + 1]["product"] == switch["product"]
    for event in frames:
        blob = event["file"].endswith(("p1.png", "p3.png"))
        assert event["verdict"] == ("NG" if blob and event["product"] == "a" else "OK"), event


def test_a_new_threshold_of_a_product_reaches_its_open_copies_and_is_logged_where_it_judges(line) -> None:
    """A console save of product a while b runs: a is judged by it when it is back, and a save while a runs
    switches the threshold at the next frame, as with one bundle."""
    from runtime.line.live_threshold import Calibration
    from runtime.score_scale import ScoreScale

    line.line.switch("b", "test")
    line.run(1)
    line.line.recalibrate("a", Calibration(ScoreScale(0.95)), "console save by anna")
    line.line.roll_back("test roll back")
    line.run(1)
    line.line.recalibrate("a", Calibration(ScoreScale(0.2)), "console save by anna")
    line.run(1)
    events = read_events(line.events)
    assert line.judged_by() == [("b", "OK"), ("a", "OK"), ("a", "NG")]
    assert [(e.get("event"), e["product"], e["threshold"]) for e in events if "event" in e] == [
        ("product_switch", "b", 0.9), ("product_switch", "a", 0.95), ("threshold_switch", "a", 0.2)]
    # the summary names every product and threshold that judged, not only those the run started with
    assert line.stats.judged_by.products() == ["b", "a"]
    assert [(s["product"], s["threshold"], s["frames"], s["first_frame"]) for s in line.stats.judged_by.summary()] == [
        ("b", 0.9, 1, 0), ("a", 0.95, 1, 1), ("a", 0.2, 1, 2)]
