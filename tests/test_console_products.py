"""The console follows the product on the line: a real --products line (tiny bundles in ONNX Runtime, run_line
in its own thread) with the console's LineView and review keeper attached, driven over HTTP across changeovers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402
from test_changeover import ONE_THREAD, Line, make_products, read_events  # noqa: E402
from test_console import AUTH, TOKEN, part, write_parts  # noqa: E402

from console.actions import Console  # noqa: E402
from console.line_view import LineView  # noqa: E402
from console.review import KeepForReview, ReviewFolders  # noqa: E402
from console.routes import build_app  # noqa: E402
from runtime.line.products import ProductLine, open_product  # noqa: E402


class Watched:
    """A --products line starting on product a, watched by the console as `daad run --console` attaches it."""

    def __init__(self, products: Path, events: Path) -> None:
        first = open_product(products, "a", ONE_THREAD)
        self.products = products
        self.view = LineView(first.preprocess, run_id="run1")
        self.reviews = ReviewFolders(first.bundle.root, products, 10**9)
        self.keeper = KeepForReview(self.reviews, self.view.picture_image, "run1")
        self.line = Line(ProductLine(first, products, ONE_THREAD), events, sinks=[self.view, self.keeper])
        console = Console(first.bundle, ONE_THREAD, TOKEN, self.view, first.threshold, self.reviews, self.line.line)
        self.client = TestClient(build_app(console))
        self.rng = np.random.default_rng(0)

    def good(self, count: int) -> None:
        """`count` good parts (scores ~0.02-0.08: OK under a's 0.3 and b's 0.2)."""
        self.line.run(count, lambda index: part(index, self.rng))

    def defects_every(self, count: int, every: int) -> None:
        """`count` parts, every `every`-th with a white blob (0.5: NG under both)."""
        self.line.run(count, lambda index: part(index, self.rng, defect=index % every == every - 1))

    def switch(self, name: str) -> None:
        """Switch through the console; the product judges from the next part on."""
        command = {"action": "switch", "product": name, "by": "anna"}
        answer = self.client.post("/api/product", json=command, headers=AUTH)
        assert answer.status_code == 200, answer.text

    def roll_back(self) -> None:
        assert self.client.post("/api/product", json={"action": "rollback"}, headers=AUTH).status_code == 200

    def calibrated_from_line(self, parts: int = 60) -> dict:
        assert self.client.post("/api/collect", json={"parts": parts}, headers=AUTH).status_code == 200
        self.good(parts)
        proposal = self.client.post("/api/propose", json={"good": "live"}, headers=AUTH)
        assert proposal.status_code == 200, proposal.text
        return proposal.json()

    def threshold_of(self, name: str) -> dict:
        return json.loads((self.products / name / "threshold.json").read_text())


@pytest.fixture
def products(tmp_path) -> Path:
    return make_products(tmp_path / "products", {"a": 0.3, "b": 0.2})


@pytest.fixture
def watched(products, tmp_path) -> Iterator[Watched]:
    running = Watched(products, tmp_path / "events.jsonl")
    yield running
    running.line.stop()


def refusal(answer, status: int = 409) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    return answer.json()["error"]


def test_after_a_switch_calibrate_and_history_are_the_new_products(watched, products) -> None:
    client = watched.client
    watched.good(5)
    a_before = (products / "a" / "threshold.json").read_bytes()
    watched.switch("b")
    watched.good(1)
    page = client.get("/calibrate").text
    assert "Calibrate the threshold of product b" in page and str(products / "b" / "review" / "good") in page
    assert str(products / "a") not in page
    assert client.get("/api/history").json()["product"] == "b"

    proposal = watched.calibrated_from_line()
    assert proposal["product"] == "b" and proposal["counts"]["good"] == 60
    saved = client.post("/api/save", json={"proposal": proposal["id"], "saved_by": "anna"},
                        headers=AUTH)
    assert saved.status_code == 200, saved.text
    b = watched.threshold_of("b")
    assert (b["saved_by"], b["threshold"]) == ("anna", proposal["threshold"])
    assert (products / "a" / "threshold.json").read_bytes() == a_before  # the product the run started with: untouched
    assert watched.line.line.current.threshold.value == proposal["threshold"]
    watched.good(1)
    switch = [e for e in read_events(watched.line.events) if e.get("event") == "threshold_switch"]
    assert [(e["product"], e["threshold"], e["origin"]) for e in switch] == [("b", proposal["threshold"],
                                                                              "console save by anna")]

    rows = client.get("/api/history").json()["entries"]
    assert [row["saved_by"] for row in rows] == ["anna", ""] and rows[0]["active"] and rows[1]["same_model"]
    assert "reload the page" in refusal(client.post("/api/rollback", json={"file": rows[1]["file"], "product": "a"},
                                                    headers=AUTH))
    rolled = client.post("/api/rollback", json={"file": rows[1]["file"], "saved_by": "carl", "product": "b"},
                         headers=AUTH)
    assert rolled.status_code == 200 and watched.threshold_of("b")["threshold"] == 0.2
    assert watched.line.line.current.threshold.value == 0.2
    assert (products / "a" / "threshold.json").read_bytes() == a_before


def test_ng_frames_are_kept_for_the_review_of_the_product_that_judged_them(watched, products) -> None:
    client = watched.client
    watched.defects_every(10, 5)  # a rejects parts 4 and 9
    watched.switch("b")
    watched.defects_every(10, 5)  # b rejects parts 14 and 19
    pending = {name: sorted(path.name for path in (products / name / "review" / "pending").glob("run1_*[0-9].png"))
               for name in ("a", "b")}
    assert pending == {"a": ["run1_00000004_p4.png", "run1_00000009_p9.png"],
                       "b": ["run1_00000014_p14.png", "run1_00000019_p19.png"]}
    assert watched.keeper.counts["review_saved"] == 8  # each frame and its picture

    pictures = client.get("/api/review").json()
    assert [(p["frame"], p["product"]) for p in pictures] == [(19, "b"), (14, "b")]
    assert "Review rejected parts of product b" in client.get("/review").text
    assert client.get("/api/review/run1_00000009_p9.png").status_code == 404  # a's frame is on a's page
    assert "reload the page" in refusal(client.post(f"/api/review/{pictures[0]['id']}",
                                                    json={"label": "good", "product": "a"}, headers=AUTH))
    marked = client.post(f"/api/review/{pictures[0]['id']}", json={"label": "good", "product": "b"}, headers=AUTH)
    assert Path(marked.json()["copied_to"]).parent == products / "b" / "review" / "good"
    assert not (products / "a" / "review" / "good").exists()
    assert "1 false rejects marked in Review" in client.get("/calibrate").text

    watched.roll_back()
    watched.good(1)
    assert [(p["frame"], p["product"]) for p in client.get("/api/review").json()] == [(9, "a"), (4, "a")]
    assert "0 false rejects marked in Review" in client.get("/calibrate").text


def test_drift_and_the_trend_use_only_the_parts_of_the_product_on_the_line(watched) -> None:
    client = watched.client
    watched.switch("b")
    assert "collect once it is on the line" in refusal(client.post("/api/collect", json={"parts": 5}, headers=AUTH))
    watched.good(1)
    proposal = watched.calibrated_from_line(100)
    assert client.post("/api/save", json={"proposal": proposal["id"]}, headers=AUTH).status_code == 200
    watched.roll_back()
    watched.defects_every(60, 1)  # a runs parts that would drift b's calibration far (0.5 against ~0.05)
    watched.roll_back()
    watched.good(10)
    assert "only 10 scored parts of product 'b' since it came on the line" in refusal(
        client.get("/api/drift?parts=200"), 400)
    watched.good(30)
    steady = client.get("/api/drift?parts=200").json()
    assert steady["parts"] == 40 and not steady["drifted"], steady
    trend = client.get("/api/live").json()["trend"]
    assert len(trend["score"]) == 40 and max(trend["score"]) < 0.2
    assert set(trend["threshold"]) == {proposal["threshold"]}


def test_a_calculation_for_one_product_is_refused_once_another_is_on_the_line(watched, products, tmp_path) -> None:
    client = watched.client
    assert client.post("/api/collect", json={"parts": 60}, headers=AUTH).status_code == 200
    watched.good(30)
    watched.switch("b")
    watched.good(10)  # b's parts are not taken as a's
    assert client.get("/api/collect").json() == {"wanted": 60, "collected": 30, "done": False}
    assert "the parts collected are of product 'a'" in refusal(client.post("/api/propose", json={"good": "live"},
                                                                           headers=AUTH))
    watched.roll_back()
    watched.good(30)
    from_line = client.post("/api/propose", json={"good": "live", "product": "a"}, headers=AUTH).json()
    from_folder = client.post("/api/propose", json={"good": str(write_parts(tmp_path / "good", 30))},
                              headers=AUTH).json()
    assert from_line["product"] == from_folder["product"] == "a"

    watched.switch("b")
    watched.good(1)
    before = {name: watched.threshold_of(name) for name in ("a", "b")}
    for proposal in (from_line, from_folder):
        said = refusal(client.post("/api/save", json={"proposal": proposal["id"], "saved_by": "anna"}, headers=AUTH))
        assert f"calibration {proposal['id']} was calculated for product 'a'" in said and "calculate again" in said
    assert "reload the page" in refusal(client.post("/api/propose", json={"good": str(tmp_path / "good"),
                                                                          "product": "a"}, headers=AUTH))
    assert {name: watched.threshold_of(name) for name in ("a", "b")} == before
    assert watched.line.line.current.threshold.value == 0.2

    watched.roll_back()  # a is back as it ran: its calculation is good for it again
    watched.good(1)
    saved = client.post("/api/save", json={"proposal": from_line["id"], "saved_by": "anna"}, headers=AUTH)
    assert saved.status_code == 200, saved.text
    assert watched.threshold_of("a")["threshold"] == from_line["threshold"] and watched.threshold_of("b") == before["b"]
