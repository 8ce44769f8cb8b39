"""The RESULTS.md experiments end to end on a tiny synthetic product: real training, real files."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import pytest
import torch

from experiments.runs import main
from tiny_training import tiny_products

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_products(tmp_path_factory.mktemp("synth"), ("cap",))


def run(synth, out, *args):
    root, config = synth
    common = ["--data", str(root), "--out", str(out), "--image-size", "32", "--batch-size", "4", "--config", str(config)]
    assert main([args[0], *common, *args[1:]]) == 0


def test_one_curve_run_gives_the_table_at_every_budget(synth, tmp_path):
    run(synth, tmp_path / "curve", "curve", "--epochs", "3", "--every", "1", "--models", "ae", "daad+")
    rows = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [(r["product"], r["kind"]) for r in rows] == [("cap", "ae"), ("cap", "daad+")]
    for row in rows:
        assert [epoch for epoch, _ in row["curve"]] == [1, 2, 3]
        assert row["curve"][-1][1] == pytest.approx(row["image_auroc"])  # the last point is the evaluation
    # Epoch 2 of the 3-epoch run is the model a 2-epoch run ends with.
    run(synth, tmp_path / "table", "table", "--epochs", "2", "--models", "ae")
    two_epochs = json.loads((tmp_path / "table" / "table.json").read_text())[0]["image_auroc"]
    assert rows[0]["curve"][1][1] == pytest.approx(two_epochs)
    assert cv2.imread(str(tmp_path / "curve" / "curve.png")) is not None
    markdown = (tmp_path / "curve" / "curve.md").read_text()
    assert "| 3 |" in markdown and "daad+ mean image AUROC" in markdown
    late = [line for line in markdown.splitlines() if line.startswith("| mean of 3 |")]
    assert late and f"**{rows[0]['curve'][-1][1]:.3f}**" in late[0]  # the plateau of the last third


def test_granularity_compares_block_sizes_by_their_plateau(synth, tmp_path):
    run(synth, tmp_path, "granularity", "--epochs", "3", "--every", "1", "--blocks", "4", "16")
    rows = json.loads((tmp_path / "granularity.json").read_text())
    assert [(r["block"], r["memories"][0][:2]) for r in rows] == [(4, [2, 2]), (16, [8, 8])]
    for row in rows:  # plateau = mean of the last third of the run: epoch 3 of 3
        assert row["plateau_image_auroc"] == pytest.approx(row["curve"][-1][1])
    table = (tmp_path / "granularity.md").read_text()
    assert "mean plateau image AUROC" in table and table.count("\n") == 4
    assert cv2.imread(str(tmp_path / "granularity.png")) is not None


def test_curve_refuses_a_zero_interval(synth, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(synth, tmp_path, "curve", "--epochs", "2", "--every", "0")
    assert exit_info.value.code == 2
    assert "--every must be at least 1" in capsys.readouterr().err
