"""`daad build`: bundle -> TensorRT engine for this GPU (run it on the Jetson that will use it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.engine_builder import DEFAULT_WORKSPACE_MB, build_engine
from runtime.bundle import open_bundle
from runtime.backends.engine_cache import PRECISIONS, stale_engines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad build",
        description="Build a TensorRT engine from a bundle's model.onnx, on the device that will run it "
        "(an engine is tied to its GPU and TensorRT version). Needs TensorRT: an NVIDIA GPU, or a Jetson with "
        "JetPack; install daad-edge[tensorrt]. An engine already built for this model, GPU, TensorRT, "
        "precision and batch is reused; engines for anything else are never loaded.",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder written by `daad export`")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="engine precision (default fp32)")
    parser.add_argument(
        "--calib-data", type=Path, default=None,
        help="good images of this product for INT8 calibration (a folder, or an MVTec AD data set: train/good); "
        "required for int8",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="largest batch the engine accepts (default 1)")
    parser.add_argument(
        "--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
        help=f"TensorRT builder workspace in MiB (default {DEFAULT_WORKSPACE_MB}; lower it on small Jetsons)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bundle = open_bundle(args.bundle)
    engine = build_engine(bundle, args.precision, args.calib_data, args.batch, args.workspace_mb)
    print(f"engine: {engine}")
    stale = stale_engines(bundle)
    if stale:
        print(f"{len(stale)} engine(s) in {bundle.engines_dir} belong to an earlier model.onnx and are never loaded; "
              "delete them to free space")  # fmt: skip
    return 0
