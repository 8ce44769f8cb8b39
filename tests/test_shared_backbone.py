"""Products taught from one backbone part share one loaded backbone on ONNX Runtime: real products taught
by `daad teach` on tiny synthetic images, real sessions, the lease's own count, a real line changing over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_changeover import ONE_THREAD, Line, read_events
from test_sources import part_frames, write_video
from tiny_bundle import grey_frame

from runtime.backends import open_backend
from runtime.backends.backbone_lease import holders
from runtime.bundle import file_sha256, open_bundle
from runtime.cli import main as daad
from runtime.dataset import find_samples, load_images
from runtime.line.products import ProductLine, open_product
from train.synth import SynthConfig, write_product


def foreign_copy(bundle: Path, out: Path) -> Path:
    """`bundle` as if taught from another backbone part: the same weights in a backbone.onnx of another sha256."""
    shutil.copytree(bundle, out)
    graph = onnx.load(str(out / "backbone.onnx"))
    graph.producer_name = "another export"
    onnx.save(graph, str(out / "backbone.onnx"))
    metadata = json.loads((out / "model.json").read_text())
    metadata["parts"]["backbone"]["sha256"] = file_sha256(out / "backbone.onnx")
    (out / "model.json").write_text(json.dumps(metadata))
    return out


@pytest.fixture(scope="module")
def products(backbone_part, tmp_path_factory) -> Path:
    """A line's folder: pcb and cap taught from the same backbone part, and `other`, cap from another part."""
    data, folder = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("line")
    for name in ("pcb", "cap"):
        good = write_product(data, name, SynthConfig(image_size=64, train=25, test_good=2, test_defect=1))
        assert daad(["teach", "--backbone", str(backbone_part), "--good", str(good), "--out", str(folder / name),
                     "--holdout", "0.4", "--memory-size", "150", "--no-progress"]) == 0  # fmt: skip
    foreign_copy(folder / "cap", folder / "other")
    return folder


def frames_of(products: Path) -> np.ndarray:
    bundle = open_bundle(products / "pcb")
    return load_images(find_samples(Path(bundle.metadata.training["source"]), "test"), bundle.preprocess).images


def test_products_of_one_part_share_one_backbone_session_until_the_last_closes(products) -> None:
    frames = frames_of(products)
    pcb, cap = open_bundle(products / "pcb"), open_bundle(products / "cap")
    with open_backend(cap, "onnxruntime", threads=1) as alone:
        expected = alone.infer(frames).scores
    first, second = open_backend(pcb, "onnxruntime", threads=1), open_backend(cap, "onnxruntime", threads=1)
    key = first.backbone.key
    assert second.backbone.key == key and second.backbone.value is first.backbone.value
    assert holders()[key] == 2
    with open_backend(cap, "onnxruntime", threads=2) as other:  # other settings: a session of their own
        assert other.backbone.value is not first.backbone.value and holders()[key] == 2
    pcb_scores = first.infer(frames).scores
    first.close()
    first.close()  # a second close gives nothing back twice
    assert holders()[key] == 1
    cap_scores = second.infer(frames).scores  # the other product's close left its backbone running
    assert np.allclose(cap_scores, expected, rtol=1e-6) and not np.allclose(cap_scores, pcb_scores)
    second.close()
    assert key not in holders()


def test_a_product_of_another_backbone_part_gets_its_own_session(products) -> None:
    with open_backend(open_bundle(products / "cap"), "onnxruntime", threads=1) as cap, \
            open_backend(open_bundle(products / "other"), "onnxruntime", threads=1) as other:  # fmt: skip
        assert other.backbone.key != cap.backbone.key and other.backbone.value is not cap.backbone.value
        assert holders()[cap.backbone.key] == holders()[other.backbone.key] == 1
        frames = frames_of(products)
        assert np.allclose(other.infer(frames).scores, cap.infer(frames).scores, rtol=1e-5)  # the same weights
    assert cap.backbone.key not in holders() and other.backbone.key not in holders()


def test_a_changeover_loads_the_backbone_once_and_loses_no_frame(products, tmp_path) -> None:
    line = Line(ProductLine(open_product(products, "pcb", ONE_THREAD), products, ONE_THREAD),
                tmp_path / "events.jsonl", grey_frame(64, 96, blob=250))  # fmt: skip
    first = line.line.current.backend.backbone
    key, session = first.key, first.value
    try:
        line.run(3)
        cap = line.line.switch("cap", "test switch")
        assert cap.backend.backbone.value is session and holders()[key] == 2  # cap loaded its head alone
        line.run(3)
        again = line.line.switch("pcb", "test reload")  # a fresh copy of pcb; the first one is retired, still open
        line.run(2)
        assert again.backend.backbone.value is session and holders()[key] == 3
        assert line.line.roll_back("test roll back") is cap  # closes the retired first copy of pcb
        line.run(2)
        assert first.value is None and holders()[key] == 2  # the backbone stays for the two still open
        assert cap.backend.backbone.value is again.backend.backbone.value is session
    finally:
        line.stop()
    assert key not in holders()
    events = read_events(line.events)
    assert [event["frame"] for event in events if "verdict" in event] == list(range(10))
    assert [product for product, _ in line.judged_by()] == ["pcb"] * 3 + ["cap"] * 3 + ["pcb"] * 2 + ["cap"] * 2
    assert [event["product"] for event in line.switches()] == ["cap", "pcb", "cap"]


def test_daad_run_says_the_backbone_is_shared_by_the_products_of_its_part(products, tmp_path, capsys) -> None:
    video = write_video(tmp_path / "line.avi", part_frames(3, 64, 96))
    assert daad(["run", "--products", str(products), "--product", "pcb", "--source", str(video), "--threads", "1",
                 "--stats-every", "0"]) == 0  # fmt: skip
    said = capsys.readouterr()
    running = f"backbone.onnx + head.onnx, one backbone session for the 2 product(s) of {products} taught from " \
              "its part (cap, pcb)"
    assert json.loads(said.out)["backend_graphs"] == running and f"running {running}; threshold" in said.err


def test_bench_shows_the_backbone_and_the_head_within_compute_for_a_taught_bundle(products, tmp_path) -> None:
    from runtime.backends.options import BackendOptions
    from runtime.bench import cli as bench_cli
    from runtime.bench.environment import Environment
    from runtime.bench.report import write_markdown
    from runtime.bench.runner import BenchConfig, run_bench

    bundle = open_bundle(products / "cap")
    config = BenchConfig(backends=("onnxruntime",), warmup_s=0, duration_s=0, min_iterations=3)
    report = run_bench(bundle, config, bench_cli.make_opener(bundle, ONE_THREAD, None), Environment())
    stages = report.cases[0].stages
    assert stages["backbone"].status == stages["head"].status == "measured"
    assert stages["backbone"].median + stages["head"].median <= stages["compute"].median * 1.5
    text = write_markdown(report.to_dict(), tmp_path / "bench.md").read_text()
    assert "memory head (of compute)" in text and text.index("compute") < text.index("memory head (of compute)")
