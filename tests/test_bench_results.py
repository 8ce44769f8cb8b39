"""experiments.results: regenerated sections replace their markers and leave hand-written prose alone."""

from __future__ import annotations

from experiments.results import parity_section, update_sections


def test_sections_are_replaced_in_place_and_prose_is_kept(tmp_path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Results\n\nWhy coarse blocks win: measured by hand.\n\n"
        "<!-- results:latency -->\nold numbers\n<!-- /results:latency -->\n\nClosing notes.\n"
    )
    update_sections(path, {"latency": "| new | table |", "parity": "parity rows"}, "ignored title")
    text = path.read_text()
    assert "old numbers" not in text and "<!-- results:latency -->\n| new | table |\n<!-- /results:latency -->" in text
    assert text.index("Why coarse blocks win") < text.index("| new | table |") < text.index("Closing notes.")
    assert text.rstrip().endswith("<!-- results:parity -->\nparity rows\n<!-- /results:parity -->")
    update_sections(path, {"latency": "again"}, "ignored title")
    assert path.read_text().count("<!-- results:latency -->") == 1


def test_a_new_file_gets_the_title_and_every_section(tmp_path) -> None:
    path = update_sections(tmp_path / "docs" / "RESULTS.md", {"a": "first", "b": "second"}, "daad-edge results")
    text = path.read_text()
    assert text.startswith("# daad-edge results\n") and text.index("first") < text.index("second")


def test_parity_rows() -> None:
    parity = {"images": 21, "source": "fabric test split", "max_spread_score_error": 9.5e-05, "max_abs_map_error": 6e-08,
              "auroc": {"torch": 0.75, "onnxruntime": 0.75}, "passed": True}
    text = parity_section([("fabric", "daad+", parity)])
    assert "| fabric | daad+ | 21 (fabric test split) | 9.50e-05 | 6.00e-08 | 0.7500 / 0.7500 | pass |" in text


def test_quick_results_run_end_to_end(tmp_path) -> None:
    # In the default suite (about 20 s): as a slow test it broke unnoticed when experiments.runs
    # grew --reuse-runs.
    from experiments.results import main

    out = tmp_path / "RESULTS.md"
    assert main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    for name in ("model-table", "parity", "precision", "latency", "reproduce"):
        assert f"<!-- results:{name} -->" in text
    assert "| onnxruntime | torch | fp32 | 1 | 1 |" in text
