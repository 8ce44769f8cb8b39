"""The console's New product page over HTTP: a real backbone part in ONNX Runtime, real images written
with OpenCV, a real line in run_loop; the product it saves is an ordinary bundle the line can run."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from console.actions import Console  # noqa: E402
from console.routes import build_app  # noqa: E402
from console.teach_desk import TeachDesk  # noqa: E402
from runtime.bundle import open_bundle  # noqa: E402
from runtime.optional import cv2  # noqa: E402
from runtime.threshold import read_threshold  # noqa: E402
from test_console import AUTH, ONE_THREAD, TOKEN, Line, one_line_refusal  # noqa: E402
from train.synth import SynthConfig, write_product  # noqa: E402

PARTS = 52  # 2 dropped: 50, of which 10 (the default --holdout 0.2) set the threshold, the least it takes
WAIT_S = 120


@pytest.fixture(scope="module")
def good_parts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_product(root, "pcb", SynthConfig(image_size=64, train=PARTS, test_good=1, test_defect=1)) / "train" / "good"


@pytest.fixture
def client(tiny_bundle, backbone_part) -> TestClient:
    """The console of a bundle in tmp_path (so products go to tmp_path), without a camera."""
    return TestClient(build_app(Console(open_bundle(tiny_bundle), ONE_THREAD, TOKEN, backbone=backbone_part)))


def wait_for(client: TestClient, *stages: str) -> tuple[dict, list[dict]]:
    """Poll as the page does until the teach reaches one of `stages`; the last state and every one seen."""
    seen = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = client.get("/api/teach").json()
        seen.append(state)
        if state["stage"] in stages:
            return state, seen
        time.sleep(0.05)
    raise AssertionError(f"the teach stayed {seen[-1]['stage']}: {seen[-1]}")


def test_name_take_drop_fit_and_save_a_product_from_a_folder(client, good_parts, tiny_bundle) -> None:
    products = tiny_bundle.parent
    taking = client.post("/api/teach/take", json={"name": "pcb-blue", "source": str(good_parts), "parts": PARTS},
                         headers=AUTH)  # fmt: skip
    assert taking.status_code == 200 and taking.json()["stage"] == "taking", taking.text
    taken, _ = wait_for(client, "taken")
    assert taken["taken"] == PARTS and taken["names"][0] == "000.png" and taken["products"] == str(products)
    thumbnail = client.get("/api/teach/parts/3.jpg")
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert cv2().imdecode(np.frombuffer(thumbnail.content, np.uint8), cv2().IMREAD_COLOR).shape == (64, 96, 3)
    assert client.get(f"/api/teach/parts/{PARTS}.jpg").status_code == 404

    fitting = client.post("/api/teach/fit", json={"drop": [0, 7]}, headers=AUTH)
    assert fitting.status_code == 200 and fitting.json()["stage"] == "fitting", fitting.text
    # the fit runs in the background: the console answers meanwhile, and refuses a second teach
    assert client.get("/api/history").status_code == 200
    busy = client.post("/api/teach/take", json={"name": "other", "source": str(good_parts), "parts": 5}, headers=AUTH)
    assert one_line_refusal(busy, 409) and "one teach at a time" in busy.json()["error"]
    assert client.post("/api/teach/discard", headers=AUTH).status_code == 409
    fitted, seen = wait_for(client, "fitted", "failed")
    assert fitted["stage"] == "fitted", fitted["error"]
    steps = [state["step"] for state in seen if state["stage"] == "fitting"]
    assert steps and set(steps) <= {"", "features", "coreset", "calibration"}
    assert fitted["dropped"] == [taken["names"][0], taken["names"][7]]

    evidence = fitted["evidence"]
    assert "false rejects per 1000 good parts" in evidence["lines"][0] and "10 held-out" in evidence["lines"][1]
    assert evidence["threshold"] > 0 and 0 <= evidence["false_reject"] <= evidence["false_reject_upper"] <= 1
    plot = client.get("/api/teach/calibration.png")
    assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG")
    assert not (products / "pcb-blue").exists()  # nothing is a product before the technician saves it

    saved = client.post("/api/teach/save", headers=AUTH)
    assert saved.status_code == 200 and saved.json()["stage"] == "saved", saved.text
    bundle = open_bundle(products / "pcb-blue")  # an ordinary bundle, model.onnx's sha256 checked
    training = bundle.metadata.training
    assert training["taught_by"] == "daad teach" and training["product"] == "pcb-blue"
    used = training["memory_parts"] + training["calibration_parts"]
    assert len(used) == PARTS - 2 and "000.png" not in used and "007.png" not in used
    record = read_threshold(bundle)
    assert record.threshold == evidence["threshold"]  # saved is what the page showed
    assert (record.backend, record.precision) == (ONE_THREAD.backend, ONE_THREAD.precision)  # what the line runs
    assert list((products / ".teach").iterdir()) == []
    assert client.get("/api/teach/calibration.png").status_code == 200  # still shown once saved
    again = client.post("/api/teach/save", headers=AUTH)
    assert one_line_refusal(again, 409)
    taken_name = client.post("/api/teach/take", json={"name": "pcb-blue", "source": str(good_parts), "parts": 5},
                             headers=AUTH)  # fmt: skip
    assert one_line_refusal(taken_name, 409) and "already exists" in taken_name.json()["error"]


@pytest.mark.parametrize("body, status, named", [
    ({"name": "../up", "source": "FOLDER", "parts": 5}, 400, "product name"),
    ({"name": ".hidden", "source": "FOLDER", "parts": 5}, 400, "product name"),
    ({"name": "a/b", "source": "FOLDER", "parts": 5}, 400, "product name"),
    ({"name": "x" * 65, "source": "FOLDER", "parts": 5}, 400, "product name"),
    ({"name": "bundle", "source": "FOLDER", "parts": 5}, 409, "already exists"),  # the console's own bundle
    ({"name": "cap", "source": "FOLDER", "parts": 0}, 400, "parts"),
    ({"name": "cap", "source": "FOLDER", "parts": "5"}, 400, "parts"),
    ({"name": "cap", "source": "/no/such/folder", "parts": 5}, 400, "/no/such/folder"),
    ({"name": "cap", "source": "line", "parts": 5}, 400, "no running line"),
    ({"name": "cap", "source": "FOLDER"}, 400, "parts"),
    ({"name": "cap", "source": "FOLDER", "parts": 5, "colour": 1}, 400, "unknown field"),
])  # fmt: skip
def test_a_bad_take_is_a_one_line_refusal(body, status, named, client, good_parts, tiny_bundle) -> None:
    body = {key: str(good_parts) if value == "FOLDER" else value for key, value in body.items()}
    answer = client.post("/api/teach/take", json=body, headers=AUTH)
    assert one_line_refusal(answer, status) and named in answer.json()["error"]
    assert sorted(path.name for path in tiny_bundle.parent.iterdir()) == ["bundle"]  # nothing written


def test_teach_changes_need_the_token_and_go_in_order(client, good_parts, tiny_bundle) -> None:
    for path in ("/api/teach/take", "/api/teach/fit", "/api/teach/save", "/api/teach/discard"):
        for headers in ({}, {"X-Console-Token": "wrong"}):
            assert client.post(path, json={}, headers=headers).status_code == 401, path
    assert one_line_refusal(client.post("/api/teach/fit", json={"drop": []}, headers=AUTH), 404)
    assert client.get("/api/teach/calibration.png").status_code == 404
    client.post("/api/teach/take", json={"name": "few", "source": str(good_parts), "parts": 20}, headers=AUTH)
    wait_for(client, "taken")
    assert one_line_refusal(client.post("/api/teach/save", headers=AUTH), 409)
    for drop in ([20], [-1], "0", [True]):
        assert one_line_refusal(client.post("/api/teach/fit", json={"drop": drop}, headers=AUTH), 400)
    few = client.post("/api/teach/fit", json={"drop": []}, headers=AUTH)  # 20 parts: 4 held out, 10 needed
    assert one_line_refusal(few, 400) and "at least 48" in few.json()["error"]
    assert client.post("/api/teach/discard", headers=AUTH).json()["stage"] is None
    assert sorted(path.name for path in tiny_bundle.parent.iterdir()) in (["bundle"], [".teach", "bundle"])


def test_without_a_backbone_part_the_page_says_how_to_give_one(tiny_bundle, good_parts) -> None:
    client = TestClient(build_app(Console(open_bundle(tiny_bundle), ONE_THREAD, TOKEN)))
    assert client.get("/teach").status_code == 200 and client.get("/api/teach").json()["backbone"] is None
    answer = client.post("/api/teach/take", json={"name": "cap", "source": str(good_parts), "parts": 5}, headers=AUTH)
    assert one_line_refusal(answer, 400) and "--backbone PART" in answer.json()["error"]


def test_take_the_next_parts_from_the_running_line(tiny_bundle, backbone_part, good_parts, tmp_path) -> None:
    line = Line(tiny_bundle, tmp_path / "events.jsonl")
    try:
        console = Console(line.bundle, ONE_THREAD, TOKEN, line.view, line.threshold, line.review, backbone=backbone_part)
        client = TestClient(build_app(console))
        line.run(5)  # parts before the take are not taken
        answer = client.post("/api/teach/take", json={"name": "from-line", "source": "line", "parts": 12}, headers=AUTH)
        assert answer.status_code == 200 and answer.json()["source"] == "the line", answer.text
        images = sorted(good_parts.iterdir())
        fed = 0
        while client.get("/api/teach").json()["stage"] == "taking":
            assert fed < 100, "the teach took no frames from the line"
            image = cv2().imread(str(images[fed % len(images)]))
            line.feed([(image, f"belt{fed:03d}.png")])  # the loop judges every frame while the teach takes them
            fed += 1
        state = client.get("/api/teach").json()
        assert state["stage"] == "taken" and state["taken"] == 12 and state["names"][0].startswith("belt")
        assert client.get("/api/teach/parts/11.jpg").status_code == 200
        assert line.view.snapshot()["verdicts"]["OK"] + line.view.snapshot()["verdicts"]["NG"] == 5 + fed
        assert line.view._taking is None  # the take let go of the line
    finally:
        line.stop()


def test_start_over_while_taking_from_the_line_lets_go_of_it(tiny_bundle, backbone_part, tmp_path) -> None:
    line = Line(tiny_bundle, tmp_path / "events.jsonl")
    try:
        console = Console(line.bundle, ONE_THREAD, TOKEN, line.view, line.threshold, line.review, backbone=backbone_part)
        client = TestClient(build_app(console))
        client.post("/api/teach/take", json={"name": "stalled", "source": "line", "parts": 50}, headers=AUTH)
        line.run(3)
        wait = time.monotonic() + WAIT_S
        while client.get("/api/teach").json()["taken"] < 3:
            assert time.monotonic() < wait, "the teach took no frames"
            time.sleep(0.05)
        assert client.post("/api/teach/discard", headers=AUTH).json()["stage"] is None
        while line.view._taking is not None:  # the take's thread ends within TAKE_WAIT_S
            assert time.monotonic() < wait, "the take kept the line"
            time.sleep(0.05)
        line.run(3)  # the line goes on, unhindered
        assert client.get("/api/teach").json()["stage"] is None
        assert not (tiny_bundle.parent / "stalled").exists() and not (tiny_bundle.parent / ".teach" / "stalled").exists()
    finally:
        line.stop()


def test_a_teach_that_fails_in_the_background_says_why_in_one_line(client, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(3):
        (broken / f"{index}.png").write_bytes(b"not a picture")
    client.post("/api/teach/take", json={"name": "cap", "source": str(broken), "parts": 3}, headers=AUTH)
    failed, _ = wait_for(client, "failed", "taken")
    assert failed["stage"] == "failed" and "\n" not in failed["error"] and "Traceback" not in failed["error"]
    assert one_line_refusal(client.post("/api/teach/fit", json={}, headers=AUTH), 409)
    assert client.post("/api/teach/discard", headers=AUTH).status_code == 200
    cv2().imwrite(str(broken / "9.png"), np.full((64, 96, 3), 128, np.uint8))
    client.post("/api/teach/take", json={"name": "cap", "source": str(broken), "parts": 4}, headers=AUTH)
    taken, _ = wait_for(client, "taken", "failed")
    assert taken["names"] == ["9.png"] and len(taken["skipped"]) == 3 and taken["skipped"][0].startswith("0.png (")


def test_the_fit_beside_the_line_takes_half_the_cores_at_a_lower_priority(tiny_bundle, backbone_part,
                                                                         good_parts) -> None:
    """Under `daad run --console` without --threads the fit took every core at the loop's priority."""
    base, steps = os.getpriority(os.PRIO_PROCESS, 0), {}

    class Watched(TeachDesk):
        def _step(self, teach, step: str) -> None:  # runs in the fit's thread
            steps[step] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            super()._step(teach, step)

    desk = Watched(tiny_bundle.parent, backbone_part)  # as the console makes it for a line without --threads
    desk.take("cap", str(good_parts), PARTS)
    deadline = time.monotonic() + WAIT_S
    while desk.state()["stage"] == "taking":
        assert time.monotonic() < deadline, "the take did not end"
        time.sleep(0.05)
    desk.fit([])
    while desk.state()["stage"] == "fitting":
        assert time.monotonic() < deadline, "the fit did not end"
        time.sleep(0.05)
    assert desk.state()["stage"] == "fitted", desk.state()["error"]
    assert steps == dict.fromkeys(("features", "coreset", "calibration"), min(19, base + 10))
    assert desk._args(desk._teach).threads == max(1, (os.cpu_count() or 1) // 2)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # only the fit's own thread gave way
