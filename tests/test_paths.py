"""Output paths that would destroy an input, a bundle file or another output are refused up front."""

from __future__ import annotations

import os

import pytest

from runtime.errors import DaadError
from runtime.paths import OutputPathError, check_outputs


def test_output_equal_to_an_input_file_is_refused_naming_both(tmp_path) -> None:
    source = tmp_path / "line.avi"
    source.write_bytes(b"video")
    with pytest.raises(OutputPathError, match=r"--output .*line\.avi is the same file as --source"):
        check_outputs({"--source": source}, {"--output": tmp_path / "." / "line.avi"})
    assert source.read_bytes() == b"video"


def test_symlinks_and_hard_links_to_an_input_are_the_input(tmp_path) -> None:
    source = tmp_path / "line.avi"
    source.write_bytes(b"video")
    (tmp_path / "link.avi").symlink_to(source)
    os.link(source, tmp_path / "hard.avi")
    for alias in ("link.avi", "hard.avi"):
        with pytest.raises(OutputPathError):
            check_outputs({"--source": source}, {"--output": tmp_path / alias})


def test_anything_inside_an_input_folder_is_refused(tmp_path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    for target in (bundle / "model.json", bundle, bundle / "ng", bundle / "new.jsonl"):
        with pytest.raises(OutputPathError, match="--bundle"):
            check_outputs({"--bundle": bundle}, {"--events": target})


def test_two_outputs_on_one_path_are_refused(tmp_path) -> None:
    with pytest.raises(OutputPathError, match="--events and --summary are the same path"):
        check_outputs({}, {"--events": tmp_path / "x.json", "--summary": tmp_path / "sub" / ".." / "x.json"})


def test_distinct_paths_and_missing_options_pass(tmp_path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ng = tmp_path / "ng"
    check_outputs({"--bundle": bundle, "--source": None},
                  {"--events": ng / "events.jsonl", "--save-ng": ng, "--summary": None, "--output": tmp_path / "o.avi"})
    assert issubclass(OutputPathError, DaadError)


def test_a_hard_link_to_a_file_inside_an_input_folder_is_that_file(tmp_path) -> None:
    """--events linked to BUNDLE/threshold.json, --output to model.onnx, --events to a source image: all refused."""
    bundle, images = tmp_path / "bundle", tmp_path / "images" / "good"
    bundle.mkdir()
    images.mkdir(parents=True)
    (bundle / "threshold.json").write_text('{"threshold": 3.07}')
    (bundle / "model.onnx").write_bytes(b"onnx")
    (images / "000.png").write_bytes(b"png")
    cases = [("--events", "events.jsonl", bundle / "threshold.json", "--bundle"),
             ("--output", "overlay.avi", bundle / "model.onnx", "--bundle"),
             ("--events", "parts.jsonl", images / "000.png", "--source")]
    for option, name, original, input_name in cases:
        os.link(original, tmp_path / name)
        with pytest.raises(OutputPathError, match=rf"{option} .*{name} is a hard link to .*{original.name} inside "
                                                  rf"{input_name}"):
            check_outputs({"--bundle": bundle, "--source": tmp_path / "images"}, {option: tmp_path / name})
    assert (bundle / "threshold.json").read_text() == '{"threshold": 3.07}'
    (tmp_path / "alone.jsonl").write_text("")
    os.link(tmp_path / "alone.jsonl", tmp_path / "elsewhere.jsonl")  # linked, but to nothing the run reads
    check_outputs({"--bundle": bundle, "--source": tmp_path / "images"}, {"--events": tmp_path / "alone.jsonl"})
