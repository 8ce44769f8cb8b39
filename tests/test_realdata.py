"""The real-data benchmark end to end on two tiny synthetic products: real training, export and timing."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import pytest
import torch

from experiments.front import front
from experiments.front import main as front_main
from experiments.realdata import main
from experiments.realdata import main as realdata
from runtime.errors import DataError
from tiny_training import tiny_products

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def two_products(tmp_path_factory):
    return tiny_products(tmp_path_factory.mktemp("sets"), ("cap", "pcb"))


def test_every_kind_and_seed_gives_mean_and_spread_cost_and_a_grid(two_products, tmp_path):
    root, config = two_products
    common = ["--data", str(root), "--out", str(tmp_path), "--image-size", "32", "--batch-size", "4",
              "--config", str(config), "--steps", "4", "--bench-seconds", "0.05", "--models", "ae", "daad+"]
    assert main([*common, "--seeds", "0", "1"]) == 0
    rows = json.loads((tmp_path / "realdata.json").read_text())
    assert [(r["product"], r["kind"], r["seed"]) for r in rows] == [
        (p, k, s) for p in ("cap", "pcb") for k in ("ae", "daad+") for s in (0, 1)
    ]
    assert all(r["epochs"] == 2 for r in rows)  # 8 images in batches of 4: 4 steps are 2 epochs
    assert all(r["gflops"] > 0 and r["latency_ms"] >= r["fastest_ms"] > 0 for r in rows if r["seed"] == 0)
    assert rows[0]["image_auroc"] != rows[1]["image_auroc"] or rows[0]["pixel_auroc"] != rows[1]["pixel_auroc"]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(s["product"], s["kind"]) for s in summary][-2:] == [("synthetic mean", "ae"), ("synthetic mean", "daad+")]
    cap_ae = summary[0]
    values = [r["image_auroc"] for r in rows[:2]]
    assert cap_ae["image_auroc"][0] == pytest.approx(sum(values) / 2)
    assert cap_ae["image_auroc"][1] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert set(cap_ae["per_defect"]) == {r for r in rows[0]["per_defect"]}
    mean_ae = summary[-2]["image_auroc"][0]
    assert mean_ae == pytest.approx(sum(r["image_auroc"] for r in rows if r["kind"] == "ae") / 4)

    table = (tmp_path / "realdata.md").read_text()
    assert table.startswith("Budget: 4 steps of batch 4 for the pixel kinds, one fitting pass for the feature memories (cap 32x32 px, 2 epochs; pcb 32x32 px, 2 epochs), seeds 0 1")
    assert "| cap | ae | 0 1 | " in table and " ± " in table and table.count("\n| ") == 1 + 6  # header and six rows
    for name in ("cap-ae", "cap-daad+", "pcb-ae", "pcb-daad+"):
        assert cv2.imread(str(tmp_path / "grids" / f"{name}.png")) is not None



def test_the_front_keeps_what_no_cheaper_configuration_beats(two_products, tmp_path):
    points = [
        {"gflops": 1.0, "image_auroc": 0.70},
        {"gflops": 2.0, "image_auroc": 0.65},  # dearer and worse: off the front
        {"gflops": 2.0, "image_auroc": 0.80},
        {"gflops": 4.0, "image_auroc": None},  # not measured
        {"gflops": 8.0, "image_auroc": 0.90},
    ]
    assert [p["image_auroc"] for p in front(points, "image_auroc")] == [0.70, 0.80, 0.90]


def test_front_reads_the_summaries_of_realdata_runs(two_products, tmp_path):
    root, config = two_products
    out = tmp_path / "tiny-ae"
    assert realdata([
        "--data", str(root / "cap"), "--out", str(out), "--image-size", "32", "--batch-size", "4", "--config", str(config),
        "--steps", "2", "--bench-seconds", "0.05", "--models", "ae", "--seeds", "0",
    ]) == 0  # fmt: skip
    assert front_main([str(out), "--out", str(tmp_path / "front.png")]) == 0
    assert cv2.imread(str(tmp_path / "front.png")) is not None
    table = (tmp_path / "front.md").read_text()
    assert "| tiny-ae | cap | ae |" in table and table.count("yes") == 2  # cap and its synthetic mean
    with pytest.raises(DataError, match="summary.json does not exist"):
        front_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "f.png")])
