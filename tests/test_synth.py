"""`daad synth`: layout, determinism, defects that match their masks, and detection that is not trivial."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main as daad
from runtime.dataset import find_samples, load_images, load_masks, summarize
from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig
from train.metrics import image_auroc
from train.synth import Renderer, SynthConfig, example_grid, write_product
from train.synth_cli import main
from train.synth_defects import DEFECTS
from train.synth_products import PRODUCTS

SMALL = SynthConfig(image_size=48, seed=3, train=3, test_good=2, test_defect=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_is_mvtec_ad_with_a_mask_per_defect(tmp_path: Path) -> None:
    folder = write_product(tmp_path, "pcb", SMALL)
    summary = summarize(folder)
    assert summary["train"] == {"good": 3}
    assert summary["test"] == {"good": 2, **{defect: 2 for defect in DEFECTS}}
    assert summary["masks"] == 2 * len(DEFECTS)
    defective = [s for s in find_samples(folder, "test") if s.label == 1]
    assert all(s.mask_path == folder / "ground_truth" / s.defect / f"{s.path.stem}_mask.png" for s in defective)
    masks = load_masks(defective, PreprocessConfig(48, 48, 3))
    assert masks.reshape(len(masks), -1).any(axis=1).all()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = _files(write_product(tmp_path / "a", "cap", SMALL))
    again = _files(write_product(tmp_path / "b", "cap", SMALL))
    assert first == again
    other = _files(write_product(tmp_path / "c", "cap", replace(SMALL, seed=4)))
    images = [name for name in first if name.endswith(".png")]
    assert all(first[name] != other[name] for name in images)


def test_counts_do_not_change_the_other_images(tmp_path: Path) -> None:
    few = _files(write_product(tmp_path / "a", "fabric", SMALL))
    more = _files(write_product(tmp_path / "b", "fabric", replace(SMALL, train=5)))
    assert all(more[name] == data for name, data in few.items() if name.endswith(".png"))


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_severity_draws_the_same_defect_fainter(defect: str) -> None:
    def sample(severity: float) -> tuple[np.ndarray, np.ndarray]:
        image, mask = Renderer(PRODUCTS["cap"], 64, severity).sample(np.random.default_rng(5), defect)
        return image.astype(float), mask

    (faint, faint_mask), (full, full_mask), (none, _) = sample(0.5), sample(1.0), sample(1e-6)
    assert np.array_equal(faint_mask, full_mask)  # same place, same shape, same ground truth
    change_full, change_faint = np.abs(full - none)[full_mask].mean(), np.abs(faint - none)[full_mask].mean()
    assert change_full > 3 and 0.35 < change_faint / change_full < 0.65


def test_severity_leaves_good_images_alone_and_is_checked(tmp_path: Path) -> None:
    full = _files(write_product(tmp_path / "full", "cap", SMALL))
    faint = _files(write_product(tmp_path / "faint", "cap", replace(SMALL, severity=0.4)))
    assert {n: d for n, d in full.items() if "good" in n} == {n: d for n, d in faint.items() if "good" in n}
    assert {n: d for n, d in full.items() if "ground_truth" in n} == {n: d for n, d in faint.items() if "ground_truth" in n}
    assert any(full[n] != faint[n] for n in full if "test/scratch" in n)
    with pytest.raises(ValueError, match="severity must be in"):
        SynthConfig(severity=0.0)


@pytest.mark.parametrize("product", list(PRODUCTS))
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_defects_change_the_pixels_their_masks_cover(product: str, defect: str) -> None:
    renderer = Renderer(PRODUCTS[product], 64)
    rng = np.random.default_rng(11)
    image, region = renderer.place(rng)
    before = image.copy()
    mask = DEFECTS[defect](image, region, rng)
    change = np.abs(image - before).max(axis=2)
    assert mask.any() and not (mask & ~region).any()
    assert change[mask].mean() > 5 * max(change[~mask].mean(), 0.1)
    near = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    near[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = True
    assert change[~near].max() < 1.0  # nothing changes away from the defect


def test_detection_by_distance_to_the_mean_good_image_is_far_from_perfect(tmp_path: Path) -> None:
    config = SynthConfig(image_size=48, seed=0, train=20, test_good=10, test_defect=3)
    for product in PRODUCTS:
        folder = write_product(tmp_path, product, config)
        prep = PreprocessConfig(48, 48, 3)
        train = load_images(find_samples(folder, "train"), prep).images.astype(np.float32)
        test = load_images(find_samples(folder, "test"), prep)
        distance = ((test.images - train.mean(axis=0)) ** 2).mean(axis=(1, 2, 3))
        auroc = image_auroc([s.label for s in test.samples], distance)
        assert auroc < 0.9, f"{product}: a trivial baseline separates the defects (AUROC {auroc:.2f})"


def test_example_grid_has_a_row_per_product_and_a_column_per_sample() -> None:
    grid = example_grid(image_size=32)
    tile_height, tile_width = 32 + 16 + 4, 32 + 4
    assert grid.shape == (len(PRODUCTS) * tile_height, (2 + len(DEFECTS)) * tile_width, 3)


def test_cli_writes_prints_summary_and_refuses_to_mix_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--products", "cap", "--image-size", "32", "--train", "2", "--test-good", "1", "--test-defect", "1"]
    assert main(argv) == 0
    assert "train: good 2" in capsys.readouterr().out
    with pytest.raises(DataError, match="--overwrite"):
        main(argv)
    assert main([*argv, "--overwrite"]) == 0
    with pytest.raises(DataError, match="unknown product"):
        main(["--out", str(tmp_path), "--products", "cap,widget"])


def test_overwrite_never_deletes_a_folder_synth_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / "precious.png").write_bytes(b"user data")
    with pytest.raises(DataError, match="not written by"):
        main(["--out", str(tmp_path), "--products", "cap", "--overwrite", "--image-size", "32"])
    assert (tmp_path / "cap" / "precious.png").exists()


SMALL_ARGS = ["--products", "cap", "--image-size", "32", "--test-good", "1", "--test-defect", "1"]


def test_overwrite_deletes_only_what_the_manifest_lists_and_refuses_otherwise(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "synth.json").write_text("{}")  # not a manifest: nothing of the folder may go
    (cap / "precious.png").write_bytes(b"user data")
    with pytest.raises(DataError, match="not written by `daad synth`.*nothing was deleted"):
        main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "3", "--overwrite"])
    assert (cap / "precious.png").read_bytes() == b"user data" and (cap / "synth.json").read_text() == "{}"

    (cap / "precious.png").unlink()
    (cap / "synth.json").unlink()
    assert main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "3"]) == 0
    written = sorted(path for path in cap.rglob("*") if path.is_file())
    assert json.loads((cap / "synth.json").read_text())["complete"] is True
    (cap / "train" / "good" / "mine.png").write_bytes(b"user data")  # the user adds a file
    with pytest.raises(DataError, match=r"holds 1 file\(s\) `daad synth` did not write \(train/good/mine.png\)"):
        main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "2", "--overwrite"])
    assert sorted(path for path in cap.rglob("*") if path.is_file() and path.name != "mine.png") == written

    (cap / "train" / "good" / "mine.png").unlink()
    assert main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "2", "--overwrite"]) == 0
    assert sorted(path.name for path in (cap / "train" / "good").iterdir()) == ["000.png", "001.png"]


def test_a_killed_synth_can_be_overwritten(tmp_path: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_TWO_IMAGES, str(tmp_path)], cwd=Path(__file__).resolve().parents[1]
    )
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((tmp_path / "cap" / "synth.json").read_text())
    assert manifest["complete"] is False and len(list((tmp_path / "cap").rglob("*.png"))) == 2
    with pytest.raises(DataError, match="--overwrite"):
        main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "2"])
    assert main(["--out", str(tmp_path), *SMALL_ARGS, "--train", "2", "--overwrite"]) == 0
    assert json.loads((tmp_path / "cap" / "synth.json").read_text())["complete"] is True


KILLED_AFTER_TWO_IMAGES = """
import os, signal, sys
import train.synth as synth
write, calls = synth._write_png, []
def write_then_die(path, image):
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(path)
    write(path, image)
synth._write_png = write_then_die
synth.write_product(synth.Path(sys.argv[1]), "cap", synth.SynthConfig(image_size=32, train=4, test_good=1, test_defect=1))
"""


def test_an_unwritable_out_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    assert daad(["synth", "--out", str(tmp_path / "a-file" / "data"), *SMALL_ARGS, "--train", "2"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'a-file' / 'data'}" in err and "is a file, not a folder" in err
    assert err.count("\n") == 1 and "Traceback" not in err
