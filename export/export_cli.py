"""`daad export`: a trained checkpoint -> a bundle a Jetson can run (model.onnx + model.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from export.backbone_export import export_backbone
from export.bundle_export import ExportResult, ParityImages, export_bundle, remove_stale_staging
from export.onnx_export import DEFAULT_OPSET
from runtime.atomic import check_output_folder, remove_orphan_temp_files
from runtime.dataset import find_samples, has_test_split, load_images
from runtime.errors import DaadError
from runtime.paths import check_outputs
from patchmemory.backbone_part import BACKBONE_FILE, BACKBONE_METADATA
from runtime.preprocess import PreprocessConfig, parse_image_size
from train.checkpoint import load_checkpoint
from train.features.backbone import WEIGHTS
from train.features.patch_features import FeatureConfig, FeatureConfigError

TENSORRT_8_MAX_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5.1/6.0) parse up to this opset


def parse_batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad export",
        description="Export a checkpoint to a bundle: model.onnx (uint8 frames in, score and anomaly_map out, "
        "memory banks frozen as constants) and model.json. The graph is checked for TensorRT 8.5-10.x and "
        "compared with PyTorch (ONNX Runtime, CPU) before anything is written.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint.pt written by `daad train`")
    source.add_argument("--backbone", choices=list(WEIGHTS),
                        help="instead of a bundle, write a backbone part (backbone.onnx + backbone.json: frames -> "
                        "patch features) for `daad teach` on a device without PyTorch; see docs/TEACH.md")
    parser.add_argument("--out", required=True, type=Path, help="bundle (or backbone part) folder to write (created if needed)")
    part = parser.add_argument_group("backbone part (with --backbone)")
    part.add_argument("--image-size", type=parse_image_size, metavar="HxW",
                      help="the frames every product taught from this part takes, e.g. 224x224 (a multiple of 16)")
    part.add_argument("--channels", type=int, choices=(1, 3), default=3, help="3: BGR colour cameras (default); 1: grey")
    part.add_argument("--levels", default=",".join(FeatureConfig.levels),
                      help=f"backbone levels of the patch features, comma-separated (default {','.join(FeatureConfig.levels)})")
    part.add_argument("--aggregation", type=int, default=FeatureConfig.aggregation,
                      help=f"local averaging window of the patch features (default {FeatureConfig.aggregation})")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default 17: TensorRT 8.5/8.6 on JetPack 5.1/6.0)"
    )
    parser.add_argument(
        "--batch", type=parse_batch, default=None, metavar="dynamic|N",
        help="batch axis of the graph: 'dynamic' (default) or a fixed size",
    )  # fmt: skip
    parser.add_argument(
        "--eval-data", type=Path, default=None,
        help="data set for the parity check (default: the one the checkpoint was trained on, if it still exists; "
        "its test split when it has one, so image AUROC is compared too)",
    )  # fmt: skip
    parser.add_argument(
        "--parity-images", type=int, default=200, help="at most this many images for the parity check (default 200)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.opset > TENSORRT_8_MAX_OPSET:
        print(f"warning: opset {args.opset} needs TensorRT 10; JetPack 5.1/6.0 (TensorRT 8.5/8.6) parse up to "
              f"{TENSORRT_8_MAX_OPSET}", file=sys.stderr)  # fmt: skip
    if args.backbone is not None:
        return export_part(args)
    result = export_checkpoint(args.checkpoint, args.out, args.opset, args.batch, args.eval_data, args.parity_images)
    stats = result.metadata.model_stats
    print(f"wrote {result.root / 'model.onnx'} and model.json (opset {result.metadata.opset}, "
          f"sha256 {result.metadata.onnx_sha256[:16]}…)")  # fmt: skip
    print(f"{result.metadata.model_kind}: {stats['parameters']:,} parameters, "
          f"{stats['flops_per_image'] / 1e9:.3f} GFLOPs per image, {len(stats['memory_banks'])} memory bank(s) frozen")  # fmt: skip
    print(result.parity.summary())
    return 0


def export_part(args: argparse.Namespace) -> int:
    """`--backbone`: the backbone part `daad teach` takes."""
    if args.image_size is None:
        raise DaadError("--backbone needs --image-size HxW: the frame size of every product taught from the part")
    try:
        config = FeatureConfig(args.backbone, tuple(filter(None, args.levels.split(","))), args.aggregation)
    except FeatureConfigError as exc:
        raise DaadError(f"{exc}: see `daad export --help`") from exc
    check_output_folder(args.out)
    result = export_backbone(args.out, config, *args.image_size, args.channels, args.opset)
    part = result.part
    print(f"wrote {args.out / BACKBONE_FILE} and {BACKBONE_METADATA} ({config.backbone}, frames "
          f"{part.preprocess['height']}x{part.preprocess['width']}x{args.channels} -> {part.feature_dim} x "
          f"{part.grid[0]} x {part.grid[1]} patch features, {part.flops_per_image / 1e9:.3f} GFLOPs per image; "
          f"ONNX Runtime within {result.max_feature_error:.1e} of PyTorch)")  # fmt: skip
    print(f"teach a product from it: daad teach --backbone {args.out} --good GOOD_DIR --out BUNDLE")
    return 0


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    eval_data: Path | None = None,
    parity_limit: int = 200,
) -> ExportResult:
    """Load a checkpoint and export it; parity runs on its data set when one is found."""
    if not Path(checkpoint).is_file():
        raise DaadError(f"checkpoint {checkpoint} does not exist: train one with `daad train`, or fix the path")
    check_outputs(inputs={"--checkpoint": checkpoint, "--eval-data": eval_data}, outputs={"--out": out})
    check_output_folder(out)  # now, not after the parity check
    removed = remove_orphan_temp_files(out)
    if removed:
        print(f"removed {len(removed)} temp file(s) that killed writes left in {out}: "
              f"{', '.join(path.name for path in removed)}", file=sys.stderr)  # fmt: skip
    staging = remove_stale_staging(Path(out).resolve().parent)
    if staging:
        print(f"removed {len(staging)} staging folder(s) that killed exports left in {Path(out).resolve().parent}: "
              f"{', '.join(path.name for path in staging)}", file=sys.stderr)  # fmt: skip
    loaded = load_checkpoint(checkpoint, device="cpu")
    root = eval_data or _data_root(loaded.meta)
    images = _parity_images(root, loaded.preprocess, parity_limit) if root is not None else None
    if images is None:
        print("parity: no data set found for this checkpoint; using synthetic frames (pass --eval-data DIR)",
              file=sys.stderr)  # fmt: skip
    # The checkpoint path lets `daad bench --backend torch` find the PyTorch reference later.
    training = {**loaded.meta, "train_config": loaded.train_config.to_dict(),
                "checkpoint": str(Path(checkpoint).resolve())}
    return export_bundle(
        loaded.model,
        loaded.preprocess,
        out,
        model_kind=loaded.model_config.kind,
        model_config=loaded.model_config.to_dict(),
        training=training,
        opset=opset,
        batch=batch,
        parity_images=images,
    )


def _data_root(meta: dict[str, Any]) -> Path | None:
    """The data set folder recorded in checkpoint metadata (a runtime.dataset.summarize dict), if it exists."""
    for value in meta.values():
        if isinstance(value, dict):
            root = value.get("root") if "layout" in value else _data_root(value)
            if root is not None and Path(root).is_dir():
                return Path(root)
    return None


def _parity_images(root: Path, preprocess: PreprocessConfig, limit: int) -> ParityImages:
    """Up to `limit` images spread over the test split (or over the good images of a plain folder)."""
    split = "test" if has_test_split(root) else "train"
    samples = find_samples(root, split)
    if len(samples) > limit:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    loaded = load_images(samples, preprocess)
    labels = np.array([sample.label for sample in loaded.samples])
    return ParityImages(loaded.images, labels, f"{root} {split} split")
