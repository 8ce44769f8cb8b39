"""The console's routes over HTTP (Starlette's TestClient), on a real tiny bundle scored by ONNX Runtime.

The line is real too: run_loop scores frames through the backend and feeds the console's LineView.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from console.actions import Console  # noqa: E402
from console.line_view import LineView  # noqa: E402
from console.review import KeepForReview, ReviewFolders  # noqa: E402
from runtime.score_scale import ScoreScale  # noqa: E402
from console.routes import TOKEN_HEADER, build_app  # noqa: E402
from console.server import Address, console_token, parse_address  # noqa: E402
from runtime.cli import main as cli_main  # noqa: E402
from runtime.errors import DaadError  # noqa: E402
from runtime.backends.options import BackendOptions  # noqa: E402
from runtime.bundle import open_bundle  # noqa: E402
from runtime.line.events import EventLog  # noqa: E402
from runtime.line.live_threshold import Calibration, LiveThreshold  # noqa: E402
from runtime.line.loop import run_loop  # noqa: E402
from runtime.line.sources import Frame  # noqa: E402
from runtime.optional import cv2  # noqa: E402
from threaded_line import Judged, ThreadedLine  # noqa: E402
from tiny_bundle import grey_frame  # noqa: E402

TOKEN = "s3cret"
ONE_THREAD = BackendOptions("onnxruntime", "fp32", threads=1)
AUTH = {TOKEN_HEADER: TOKEN}
SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


def part(index: int, rng: np.random.Generator, defect: bool = False) -> np.ndarray:
    """A good part is mid-grey with a little noise (scores ~0.02-0.08); a defect has a white blob (0.5)."""
    image = grey_frame(SIZE, SIZE, blob=255 if defect else None).astype(np.int16)
    image += rng.integers(-6 - index % 15, 7 + index % 15, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


class Line(ThreadedLine):
    """A real line running in its own thread: frames scored by ONNX Runtime in run_loop, judged by a
    LiveThreshold, seen by a LineView and logged; `run` feeds it frames and waits until they are judged."""

    def __init__(self, bundle_root, events_path, run_id: str = "run1", review_bytes: int = 10**9) -> None:
        self.bundle = open_bundle(bundle_root)
        self.threshold = LiveThreshold(0.3, "test")
        self.view = LineView(self.bundle.preprocess, run_id=run_id)
        self.review = ReviewFolders(self.bundle.root, None, review_bytes)
        self.run_id = run_id
        self.events_path = events_path
        self.rng = np.random.default_rng(0)
        self.start()

    def judge(self, frames: Iterator[Frame], judged: Judged) -> None:
        with ONE_THREAD.open(self.bundle) as backend, EventLog(self.events_path) as events:
            run_loop(frames, backend, self.bundle.preprocess, self.threshold, "test", events,
                     [self.view, KeepForReview(self.review, self.view.picture_image, self.run_id), judged])

    def run(self, count: int, defect_every: int = 0) -> None:
        """`count` parts, every `defect_every`-th of them with a defect."""
        first = self.next_index
        self.feed((part(index, self.rng, defect_every > 0 and index % defect_every == defect_every - 1),
                   f"part{index:04d}.png") for index in range(first, first + count))  # fmt: skip


def write_parts(folder, count: int, defect: bool = False, seed: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        cv2().imwrite(str(folder / f"p{index:03d}.png"), part(index, rng, defect))
    return folder


@pytest.fixture
def line(tiny_bundle, tmp_path) -> Iterator[Line]:
    line = Line(tiny_bundle, tmp_path / "events.jsonl")
    line.run(40, defect_every=10)
    yield line
    line.stop()


@pytest.fixture
def console(line) -> Console:
    return Console(line.bundle, ONE_THREAD, TOKEN, line.view, line.threshold, line.review)


@pytest.fixture
def client(console) -> TestClient:
    return TestClient(build_app(console))


def calibrated_from_line(client: TestClient, line: Line, parts: int = 60) -> dict:
    assert client.post("/api/collect", json={"parts": parts}, headers=AUTH).status_code == 200
    line.run(parts)
    proposal = client.post("/api/propose", json={"good": "live"}, headers=AUTH)
    assert proposal.status_code == 200, proposal.text
    return proposal.json()


def test_pages_render_and_link_only_local_assets(client) -> None:
    for path in ("/", "/calibrate", "/review", "/history"):
        page = client.get(path)
        assert page.status_code == 200 and "daad console" in page.text
        assert "http://" not in page.text.replace("http://testserver", "") and "https://" not in page.text
    assert client.get("/static/console.js").status_code == 200
    assert client.get("/nowhere").status_code == 404


def test_live_state_counts_the_line_and_the_frame_is_a_jpeg(client, line) -> None:
    state = client.get("/api/live").json()
    assert state["verdicts"] == {"OK": 36, "NG": 4, "FAULT": 0}
    assert state["current"]["frame"] == 39 and state["threshold"] == 0.3 and state["calibrated"] is None
    assert len(state["trend"]["score"]) == 40 and state["fps"] > 0 and state["latency_ms"]["p99"] > 0
    image = client.get("/live.jpg")
    assert image.headers["content-type"] == "image/jpeg"
    # the picture names the part it shows, so the page's verdict is that part's
    assert image.headers["x-frame"] == "39" and image.headers["x-verdict"] == state["current"]["verdict"]
    assert float(image.headers["x-score"]) == state["current"]["score"]
    decoded = cv2().imdecode(np.frombuffer(image.content, np.uint8), cv2().IMREAD_COLOR)
    assert decoded.shape == (SIZE, SIZE, 3)


def test_changes_need_the_token(client) -> None:
    for path, body in (("/api/collect", {"parts": 5}), ("/api/propose", {}), ("/api/save", {"proposal": 1}),
                       ("/api/rollback", {"file": "x"}), ("/api/review/1", {"label": "good"})):
        for headers in ({}, {TOKEN_HEADER: "wrong"}):
            answer = client.post(path, json=body, headers=headers)
            assert answer.status_code == 401 and "token" in answer.json()["error"], path


def test_bad_requests_say_what_is_wrong(client) -> None:
    assert client.post("/api/collect", json={"parts": 0}, headers=AUTH).status_code == 400
    assert "parts" in client.post("/api/collect", json={}, headers=AUTH).json()["error"]
    assert client.post("/api/collect", content=b"{not json", headers=AUTH).status_code == 400
    assert "unknown field" in client.post("/api/propose", json={"colour": 1}, headers=AUTH).json()["error"]
    assert "collect" in client.post("/api/propose", json={"good": "live"}, headers=AUTH).json()["error"]
    assert "defect" in client.post("/api/propose", json={"method": "f1"}, headers=AUTH).json()["error"]
    frr = client.post("/api/propose", json={"target_frr": 2}, headers=AUTH)
    assert frr.status_code == 400 and "false-reject" in frr.json()["error"]
    missing = client.post("/api/propose", json={"good": "/no/such/folder"}, headers=AUTH)
    assert missing.status_code == 400 and "/no/such/folder" in missing.json()["error"]
    assert client.post("/api/save", json={"proposal": 99}, headers=AUTH).status_code == 404
    assert client.get("/api/proposals/99/plot.png").status_code == 404


def test_calibrate_from_the_line_then_save_switches_the_running_loop(client, line, tiny_bundle) -> None:
    collecting = client.get("/api/collect").json()
    assert collecting == {"wanted": 0, "collected": 0, "done": False}
    proposal = calibrated_from_line(client, line)
    assert client.get("/api/collect").json() == {"wanted": 60, "collected": 60, "done": True}
    assert proposal["counts"]["good"] == 60 and proposal["rates"]["false_reject"]["upper"] > 0
    assert proposal["threshold"] == pytest.approx(max(proposal["good"]))  # 60 parts: the quantile is the top score
    assert any("cannot show" in text for text in proposal["warnings"])
    assert client.get(f"/api/proposals/{proposal['id']}/plot.png").content.startswith(b"\x89PNG")
    assert not (tiny_bundle / "threshold.json").exists()  # nothing written before save

    saved = client.post("/api/save", json={"proposal": proposal["id"], "note": "lens cleaned", "saved_by": "anna"},
                        headers=AUTH).json()
    record = json.loads((tiny_bundle / "threshold.json").read_text())
    assert record["threshold"] == saved["threshold"] == proposal["threshold"]
    assert record["note"] == "lens cleaned" and record["saved_by"] == "anna" and record["precision"] == "fp32"
    assert (tiny_bundle / "calibration.png").exists() and len(list((tiny_bundle / "thresholds").iterdir())) == 1
    assert (line.threshold.value, line.threshold.get().origin) == (proposal["threshold"], "console save by anna")
    entry = next((tiny_bundle / "thresholds").iterdir()).stem  # the whole calibration goes live, not the threshold alone
    assert line.threshold.get().calibration == Calibration(ScoreScale(record["threshold"],
                                                                      record["score_stats"]["good"]["median"]), entry)

    line.run(3)
    line.stop()  # the event log is complete
    lines = [json.loads(text) for text in line.events_path.read_text().splitlines()]
    switch = next(entry for entry in lines if entry.get("event") == "threshold_switch")
    assert switch["threshold"] == proposal["threshold"] and switch["previous"] == 0.3 and switch["frame"] == 100
    assert switch["threshold_id"] == entry and lines[-1]["threshold_id"] == entry
    assert lines[-1]["threshold"] == proposal["threshold"] and client.get("/api/live").json()["calibrated"]["saved_by"] == "anna"


def test_calibrate_from_folders_with_defects(client, tmp_path) -> None:
    good, defect = write_parts(tmp_path / "good", 40), write_parts(tmp_path / "bad", 10, defect=True)
    answer = client.post("/api/propose", json={"good": str(good), "defect": str(defect), "method": "recall",
                                               "target_recall": 0.9}, headers=AUTH)
    proposal = answer.json()
    assert answer.status_code == 200, proposal
    assert proposal["rates"]["recall"]["estimate"] == 1.0 and proposal["rates"]["auroc"] == 1.0
    assert proposal["counts"]["defect"] == 10 and any("catches 10 of 10" in text for text in proposal["lines"])


def test_outliers_among_the_collected_parts_are_left_out_unless_kept(client, line) -> None:
    client.post("/api/collect", json={"parts": 60}, headers=AUTH)
    line.run(60, defect_every=20)  # three defects slip into the "good" parts
    left_out = client.post("/api/propose", json={"good": "live"}, headers=AUTH).json()
    kept = client.post("/api/propose", json={"good": "live", "keep_outliers": True}, headers=AUTH).json()
    assert left_out["counts"]["good_outliers"] == kept["counts"]["good_outliers"] == 3
    assert left_out["threshold"] < 0.1 < kept["threshold"] and any("outlier" in text for text in left_out["lines"])


def test_a_changed_model_refuses_changes(client, line, tiny_bundle) -> None:
    proposal = calibrated_from_line(client, line)
    with open(tiny_bundle / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    answer = client.post("/api/save", json={"proposal": proposal["id"]}, headers=AUTH)
    assert answer.status_code == 409 and "model.onnx changed" in answer.json()["error"]
    assert not (tiny_bundle / "threshold.json").exists() and line.threshold.value == 0.3


def test_history_and_roll_back(client, line, tiny_bundle) -> None:
    first = calibrated_from_line(client, line)
    client.post("/api/save", json={"proposal": first["id"], "saved_by": "anna"}, headers=AUTH)
    second = client.post("/api/propose", json={"good": "live", "target_frr": 0.2}, headers=AUTH).json()
    client.post("/api/save", json={"proposal": second["id"], "saved_by": "ben"}, headers=AUTH)
    rows = client.get("/api/history").json()["entries"]
    assert [row["saved_by"] for row in rows] == ["ben", "anna"] and [row["active"] for row in rows] == [True, False]
    assert all(row["same_model"] for row in rows)

    rolled = client.post("/api/rollback", json={"file": rows[1]["file"], "saved_by": "carl"}, headers=AUTH)
    assert rolled.status_code == 200
    assert line.threshold.value == first["threshold"] != second["threshold"]
    assert json.loads((tiny_bundle / "threshold.json").read_text())["threshold"] == first["threshold"]
    rows = client.get("/api/history").json()["entries"]
    assert len(rows) == 3 and rows[0]["saved_by"] == "carl" and rows[0]["active"] and "roll back" in rows[0]["note"]

    assert client.post("/api/rollback", json={"file": "../threshold.json"}, headers=AUTH).status_code == 404
    foreign = json.loads((tiny_bundle / "thresholds" / rows[1]["file"]).read_text()) | {"precision": "fp16"}
    (tiny_bundle / "thresholds" / "threshold-2000-01-01T000000Z.json").write_text(json.dumps(foreign))
    other = client.post("/api/rollback", json={"file": "threshold-2000-01-01T000000Z.json"}, headers=AUTH)
    assert other.status_code == 400 and "precision fp16" in other.json()["error"]
    assert not next(row for row in client.get("/api/history").json()["entries"] if row["created"] == foreign["created"]
                    and row["precision"] == "fp16")["same_model"]


def test_review_marks_copy_the_camera_frame(client, line, tiny_bundle) -> None:
    pictures = client.get("/api/review").json()
    assert [picture["frame"] for picture in pictures] == [39, 29, 19, 9] and not any(p["earlier"] for p in pictures)
    picture = client.get(f"/api/review/{pictures[0]['id']}.png")
    assert picture.headers["content-type"] == "image/png"
    shown = cv2().imdecode(np.frombuffer(picture.content, np.uint8), cv2().IMREAD_COLOR)
    assert shown.shape == (SIZE, SIZE, 3) and shown[SIZE // 2, SIZE // 2].tolist() != [255, 255, 255]  # the heat map
    for unknown in ("999", "..%2Fthreshold", "run1_00000039_part0039.heat"):
        assert client.get(f"/api/review/{unknown}.png").status_code == 404, unknown

    copied = client.post(f"/api/review/{pictures[0]['id']}", json={"label": "good"}, headers=AUTH).json()["copied_to"]
    written = cv2().imread(copied)
    assert written.shape == (SIZE, SIZE, 3) and written[SIZE // 2, SIZE // 2].tolist() == [255, 255, 255]  # no heat map
    client.post(f"/api/review/{pictures[0]['id']}", json={"label": "defect"}, headers=AUTH)
    assert list((tiny_bundle / "review" / "good").iterdir()) == []
    assert len(list((tiny_bundle / "review" / "defect").iterdir())) == 1
    assert client.get("/api/review").json()[0]["label"] == "defect"
    assert client.post(f"/api/review/{pictures[1]['id']}", json={"label": "maybe"}, headers=AUTH).status_code == 400
    assert client.post("/api/review/999", json={"label": "good"}, headers=AUTH).status_code == 404
    assert "1 real defects marked" in client.get("/calibrate").text


def test_drift_check_on_the_last_parts(client, line) -> None:
    assert "calibrate before" in client.get("/api/drift?parts=50").json()["error"]
    proposal = calibrated_from_line(client, line, parts=100)
    client.post("/api/save", json={"proposal": proposal["id"]}, headers=AUTH)
    line.run(60)
    steady = client.get("/api/drift?parts=60").json()
    assert steady["parts"] == 60 and steady["lines"][0].startswith("threshold")
    line.run(60, defect_every=2)
    drifted = client.get("/api/drift?parts=60").json()
    assert drifted["drifted"] and drifted["findings"]
    assert client.get("/api/drift?parts=abc").status_code == 400


def test_without_a_camera_the_console_calibrates_from_folders(tiny_bundle, tmp_path) -> None:
    bundle = open_bundle(tiny_bundle)
    client = TestClient(build_app(Console(bundle, ONE_THREAD, TOKEN)))
    assert "No camera" in client.get("/").text
    assert client.get("/live.jpg").status_code == 404 and client.get("/api/review").json() == []
    assert client.post("/api/collect", json={"parts": 5}, headers=AUTH).status_code == 400
    assert client.get("/api/drift").status_code == 400
    proposal = client.post("/api/propose", json={"good": str(write_parts(tmp_path / "good", 30))}, headers=AUTH).json()
    client.post("/api/save", json={"proposal": proposal["id"], "saved_by": "dana"}, headers=AUTH)
    assert client.get("/api/live").json()["threshold"] == proposal["threshold"]


def test_addresses_and_tokens() -> None:
    assert parse_address("8080") == Address("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == Address("0.0.0.0", 9000) and not Address("0.0.0.0", 9000).loopback
    assert parse_address("[::1]:80").loopback and Address("localhost", 1).loopback
    with pytest.raises(DaadError, match=r"\[HOST:\]PORT"):
        parse_address("host:port")
    assert console_token(Address("0.0.0.0", 1), "given") == "given"
    assert len(console_token(Address("127.0.0.1", 1), None)) >= 16


def test_daad_run_refuses_an_open_console_without_a_token(tiny_bundle, tmp_path, capsys) -> None:
    folder = write_parts(tmp_path / "parts", 3)
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(folder), "--threshold", "0.3",
            "--console", "0.0.0.0:0", "--stats-every", "0"]
    assert cli_main(argv) == 2
    assert "--console-token" in capsys.readouterr().err


def test_frames_waiting_for_review_survive_a_restart(tiny_bundle, tmp_path) -> None:
    first = Line(tiny_bundle, tmp_path / "first.jsonl", run_id="run1")
    first.run(20, defect_every=10)  # NG frames 9 and 19
    marked = TestClient(build_app(Console(first.bundle, ONE_THREAD, TOKEN, first.view, first.threshold, first.review)))
    assert marked.post("/api/review/run1_00000019_part0019", json={"label": "good"}, headers=AUTH).status_code == 200
    first.stop()

    second = Line(tiny_bundle, tmp_path / "second.jsonl", run_id="run2")  # the station restarted
    try:
        second.run(10, defect_every=10)  # NG frame 9 of run2
        client = TestClient(build_app(Console(second.bundle, ONE_THREAD, TOKEN, second.view, second.threshold,
                                              second.review)))
        pictures = client.get("/api/review").json()
        assert [(p["run_id"], p["frame"], p["earlier"], p["label"]) for p in pictures] == [
            ("run2", 9, False, None), ("run1", 19, True, "good"), ("run1", 9, True, None)]
        assert client.get(f"/api/review/{pictures[2]['id']}.png").status_code == 200
        copied = client.post(f"/api/review/{pictures[2]['id']}", json={"label": "defect"}, headers=AUTH)
        assert copied.status_code == 200 and Path(copied.json()["copied_to"]).is_file()
    finally:
        second.stop()
    without_camera = TestClient(build_app(Console(open_bundle(tiny_bundle), ONE_THREAD, TOKEN)))
    assert [p["label"] for p in without_camera.get("/api/review").json()] == [None, "good", "defect"]


def test_the_review_folder_keeps_the_ng_store_rules(tiny_bundle, tmp_path) -> None:
    """Only its own files, a size cap, the oldest of its own removed first, counted."""
    pending = tiny_bundle / "review" / "pending"
    pending.mkdir(parents=True)
    users = {name: bytes([index]) * 5000 for index, name in enumerate(["mine.png", "notes.txt", ".hidden.png"])}
    for name, data in users.items():
        (pending / name).write_bytes(data)
    probe = Line(tiny_bundle, tmp_path / "probe.jsonl", run_id="probe")
    probe.run(1, defect_every=1)
    probe.stop()
    one_frame = sum(path.stat().st_size for path in pending.glob("probe_*.png"))  # the frame and its picture

    line = Line(tiny_bundle, tmp_path / "events.jsonl", run_id="run1", review_bytes=3 * one_frame)
    try:
        line.run(6, defect_every=1)  # six NG frames; room for three
        kept = [entry.frame for entry in line.review.of(None).pending()]
        own = list(pending.glob("run1_*.png"))
        assert len(kept) >= 2 and kept == list(range(5, 5 - len(kept), -1))  # the newest, the oldest gone first
        assert sum(path.stat().st_size for path in own) <= 3 * one_frame and not list(pending.glob("probe_*"))
        keeper = KeepForReview(line.review, line.view.picture_image, "run1")
        assert keeper.counts["review_saved"] == 12 and keeper.counts["review_removed"] == 2 + 12 - len(own)
        assert all((pending / f"run1_{frame:08d}_part{frame:04d}{kind}.png").is_file()
                   for frame in kept for kind in ("", ".heat"))
    finally:
        line.stop()
    assert {name: (pending / name).read_bytes() for name in users} == users  # never counted, never removed


def test_a_threshold_switch_is_its_own_event_for_the_plant() -> None:
    from runtime.line.live_threshold import ThresholdSwitch
    from runtime.plant.mqtt import plant_message

    switch = ThresholdSwitch(0.2, 0.3, "console save by anna", 100, run_id="run1")
    frame = {"run_id": "run1", "frame": 100, "verdict": "OK"}
    ids = {json.loads(plant_message(line, "st1"))["event_id"] for line in (switch.to_json().encode(), json.dumps(frame).encode())}
    assert ids == {"run1:100", "run1:100:threshold_switch"}


def saved_twice(client: TestClient, line: Line) -> tuple[dict, dict]:
    """Two thresholds saved from the line (anna's, then ben's); returns both proposals."""
    first = calibrated_from_line(client, line)
    client.post("/api/save", json={"proposal": first["id"], "saved_by": "anna"}, headers=AUTH)
    second = client.post("/api/propose", json={"good": "live", "target_frr": 0.2}, headers=AUTH).json()
    client.post("/api/save", json={"proposal": second["id"], "saved_by": "ben"}, headers=AUTH)
    return first, second


@pytest.mark.parametrize("stats", ["kept", "removed"])
def test_roll_back_refuses_a_history_entry_the_line_would_refuse(stats, client, line, tiny_bundle) -> None:
    """A hand-edited history entry of 1e308 would pass every part: roll back reads it like `daad run` does."""
    _, second = saved_twice(client, line)
    entries = sorted((tiny_bundle / "thresholds").iterdir())
    edited = json.loads(entries[0].read_text()) | {"threshold": 1e308}
    if stats == "removed":
        del edited["score_stats"]
    entries[0].write_text(json.dumps(edited))
    active_before = (tiny_bundle / "threshold.json").read_bytes()

    answer = client.post("/api/rollback", json={"file": entries[0].name, "saved_by": "eve"}, headers=AUTH)
    assert answer.status_code == 400 and "1e+308" in answer.json()["error"] and entries[0].name in answer.json()["error"]
    assert line.threshold.value == second["threshold"] and line.threshold.get().origin == "console save by ben"
    assert (tiny_bundle / "threshold.json").read_bytes() == active_before and len(list(entries[0].parent.iterdir())) == 2
    row = next(row for row in client.get("/api/history").json()["entries"] if row["file"] == entries[0].name)
    assert row["problem"] and not row["same_model"] and row["threshold"] == "1e+308"
    entries[1].write_text(entries[1].read_text().replace('"estimate":', '"estimate": NaN, "was":'))  # JSON has no NaN
    history = client.get("/api/history")
    assert history.status_code == 200 and history.json()["entries"][0]["rates"]["false_reject"]["estimate"] is None


@pytest.mark.parametrize("damage", ["1e308", "nested", "not json"])
def test_pages_load_with_a_damaged_active_threshold_and_offer_the_roll_back(damage, client, line, tiny_bundle) -> None:
    first, second = saved_twice(client, line)
    active = tiny_bundle / "threshold.json"
    text = {"1e308": active.read_text().replace(f'"threshold": {second["threshold"]!r}', '"threshold": 1e308'),
            "nested": '{"threshold": ' + "[" * 100_000 + "]" * 100_000 + "}", "not json": "{threshold"}[damage]
    active.write_text(text)
    for path in ("/", "/calibrate", "/review", "/history"):
        assert client.get(path).status_code == 200, path
    live = client.get("/api/live")
    assert live.status_code == 200 and "threshold.json" in live.json()["threshold_problem"]
    assert live.json()["calibrated"] is None and live.json()["threshold"] == second["threshold"]  # the line's own
    history = client.get("/api/history").json()
    problem = history["active_problem"]
    assert "threshold.json" in problem and "roll back" in problem and "\n" not in problem and len(problem) < 400
    rows = history["entries"]
    assert [row["saved_by"] for row in rows] == ["ben", "anna"] and not any(row["active"] for row in rows)
    assert all(row["same_model"] and row["problem"] is None for row in rows)  # both offered

    rolled = client.post("/api/rollback", json={"file": rows[0]["file"], "saved_by": "carl"}, headers=AUTH)
    assert rolled.status_code == 200 and line.threshold.value == second["threshold"]
    assert client.get("/api/history").json()["active_problem"] is None
    assert len(client.get("/api/history").json()["entries"]) == 3  # the damaged file was never in use: not filed


def one_line_refusal(answer, status: int = 400) -> str:
    error = answer.json()["error"]
    assert answer.status_code == status and "\n" not in error and len(error) < 300, (answer.status_code, error)
    return error


@pytest.mark.parametrize("parts", ["0", "-5", "1.5", "true", "abc", "301", "19", "99999999999999"])
def test_drift_parts_must_be_a_whole_number_in_range(parts, client, line) -> None:
    assert "'parts'" in one_line_refusal(client.get(f"/api/drift?parts={parts}"))


@pytest.mark.parametrize("path, body, named", [
    ("/api/collect", {"parts": 1.5}, "'parts' must be a whole number"),
    ("/api/collect", {"parts": True}, "'parts' must be a whole number"),
    ("/api/collect", {"parts": "5"}, "'parts' must be a whole number"),
    ("/api/collect", {"parts": -5}, "'parts' must be between 1"),
    ("/api/collect", {"parts": 5, "colour": 1}, "unknown field(s) 'colour'"),
    ("/api/propose", {"good": 123}, "'good' must be a string"),
    ("/api/propose", {"keep_outliers": "false"}, "'keep_outliers' must be true or false"),
    ("/api/propose", {"add_review_good": 1}, "'add_review_good' must be true or false"),
    ("/api/propose", {"target_frr": "0.1"}, "'target_frr' must be a number"),
    ("/api/propose", {"target_recall": "0.9", "method": "recall", "defect": "x"}, "'target_recall' must be a number"),
    ("/api/save", {"proposal": "1"}, "'proposal' must be a whole number"),
    ("/api/save", {"proposal": 1, "note": ["a"]}, "'note' must be a string"),
    ("/api/save", {"proposal": 1, "saved_by": "x" * 5000}, "'saved_by' is longer than"),
    ("/api/rollback", {"file": 5}, "'file' must be a string"),
    ("/api/review/1", {"label": 1}, "'label' must be a string"),
])
def test_every_field_is_its_json_type_or_a_400(path, body, named, client) -> None:
    assert named in one_line_refusal(client.post(path, json=body, headers=AUTH))


def test_bodies_are_json_objects_of_bounded_size(client, capfd) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    assert "nested too deeply" in one_line_refusal(client.post("/api/collect", content=b"[" * 60_000, headers=headers))
    assert "'target_frr'" in one_line_refusal(client.post("/api/propose", content=b'{"target_frr": NaN}', headers=headers))
    assert "JSON object" in one_line_refusal(client.post("/api/collect", json=[1], headers=AUTH))

    huge = b'{"note": "' + b"x" * 150_000_000 + b'"}'  # 150 MB, declared in Content-Length
    assert "larger than 64 KiB" in one_line_refusal(client.post("/api/save", content=huge, headers=headers), 413)
    del huge
    streamed = (b"x" * 1_000_000 for _ in range(150))  # no Content-Length: refused as it arrives
    assert "larger than" in one_line_refusal(client.post("/api/save", content=streamed, headers=headers), 413)
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 10_000
    no_token = client.post("/api/save", content=b"x" * 100_000, headers={"Content-Type": "application/json"})
    assert no_token.status_code == 401  # the token first: a stranger never makes the console read a body


def console_process(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "console", *argv], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_a_one_line_error(port, tiny_bundle) -> None:
    done = console_process("console", "--bundle", str(tiny_bundle), "--port", port)
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "Traceback" not in err and "http://" not in err
    assert f"argument --port: '{port}' is not a port" in err.splitlines()[-1]  # after argparse's usage
    assert sum("error" in line for line in err.splitlines()) == 1


def test_daad_runs_console_flag_is_not_taken_for_the_token(tiny_bundle) -> None:
    """`--console HOST:PORT` belongs to `daad run`; here it was silently the token, serving on 8080."""
    done = console_process("console", "--bundle", str(tiny_bundle), "--console", "127.0.0.1:18765")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "unrecognized arguments: --console 127.0.0.1:18765" in err


def test_the_url_is_printed_after_the_bind_with_the_real_port(tiny_bundle) -> None:
    """`--port 0` takes any free port: the URL printed is the port that answers, never :0."""
    process = console_process("console", "--bundle", str(tiny_bundle), "--port", "0", "--console-token", TOKEN)
    try:
        announced = process.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", announced)[1])
        assert port != 0 and httpx.get(f"http://127.0.0.1:{port}/history", timeout=30).status_code == 200

        taken = console_process("console", "--bundle", str(tiny_bundle), "--port", str(port), "--console-token", "x")
        _, err = taken.communicate(timeout=60)
        assert taken.returncode == 2 and "daad console: http" not in err  # no URL announced
        assert err.splitlines() == [f"daad console: error: the console cannot listen on http://127.0.0.1:{port}: "
                                    "Address already in use: choose another port or address with --host/--port"]
    finally:
        process.send_signal(signal.SIGTERM)  # as a service manager stops it
        process.wait(timeout=60)
    assert process.returncode == 0


def test_daad_run_announces_the_port_it_bound(tiny_bundle, tmp_path) -> None:
    folder = write_parts(tmp_path / "parts", 3)
    process = subprocess.Popen([sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source",
                                str(folder), "--loop", "--threshold", "0.3", "--threads", "1", "--stats-every", "0",
                                "--console", "0", "--console-token", TOKEN], cwd=ROOT, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    try:
        announced = next(line for line in process.stderr if line.startswith("daad console:"))
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", announced)[1])
        assert port != 0 and httpx.get(f"http://127.0.0.1:{port}/api/live", timeout=30).json()["has_line"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_a_bundle_or_too_few_parts_are_refused_as_good_parts(client, tiny_bundle, tmp_path) -> None:
    assert "is a bundle folder" in one_line_refusal(client.post("/api/propose", json={"good": str(tiny_bundle)},
                                                                headers=AUTH))
    few = write_parts(tmp_path / "few", 5)
    assert "only 5 good part(s)" in one_line_refusal(client.post("/api/propose", json={"good": str(few)}, headers=AUTH))


def test_a_restarted_console_lists_the_frames_of_the_run_before(tiny_bundle, tmp_path) -> None:
    """Real processes: `daad run --console` judges two defects and ends; `daad console` started
    afterwards lists both on its Review page and marks one."""
    parts = tmp_path / "parts"
    parts.mkdir()
    rng = np.random.default_rng(5)
    for index in range(40):  # the last defect comes after many good parts: none may crowd it out of the queue
        cv2().imwrite(str(parts / f"p{index:02d}.png"), part(index, rng, defect=index in (2, 39)))
    run = subprocess.run([sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source", str(parts),
                          "--threshold", "0.3", "--threads", "1", "--stats-every", "0", "--console", "0",
                          "--console-token", TOKEN], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["review_saved"], summary["review_removed"], summary["review_dropped"]) == (4, 0, 0)

    console = console_process("console", "--bundle", str(tiny_bundle), "--port", "0", "--console-token", TOKEN)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", console.stderr.readline())[0]
        pictures = httpx.get(f"{url}/api/review", timeout=30).json()
        assert [(p["frame"], p["name"], p["earlier"]) for p in pictures] == [(39, "p39.png", True), (2, "p02.png", True)]
        assert pictures[0]["run_id"] == summary["run_id"] and pictures[0]["score"] > 0.3
        marked = httpx.post(f"{url}/api/review/{pictures[1]['id']}", json={"label": "defect"}, headers=AUTH, timeout=30)
        assert marked.status_code == 200 and Path(marked.json()["copied_to"]).parent == tiny_bundle / "review" / "defect"
    finally:
        console.send_signal(signal.SIGINT)
        console.wait(timeout=60)


@pytest.mark.parametrize("address", ["99999", "0.0.0.0:70000", "host:port"])
def test_daad_run_refuses_a_console_address_out_of_range_in_one_line(address, tiny_bundle, tmp_path, capsys) -> None:
    folder = write_parts(tmp_path / "parts", 3)
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(folder), "--threshold", "0.3", "--console", address]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "from 0 to 65535" in err and "http://" not in err
