"""`daad build`: TensorRT engines for this GPU (run it on the Jetson that will use them).

A bundle `daad export` wrote becomes one engine. A bundle `daad teach` wrote becomes its backbone
part's engine, built once per device and shared by every product taught from that part, plus its
own small memory head's engine; `--backbone PART` builds the shared engine before any product is
taught. docs/EXPORT.md ("Engines of taught products") says why.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.engine_builder import DEFAULT_WORKSPACE_MB, build_backbone_engine, build_bundle_engines
from runtime.bundle import open_bundle
from runtime.backends.engine_cache import DEVICE_ENGINE_DIR_VARIABLE, PRECISIONS, device_engine_dir, stale_engines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad build",
        description="Build TensorRT engines on the device that will run them (an engine is tied to its GPU and "
        "TensorRT version). Needs TensorRT: an NVIDIA GPU, or a Jetson with JetPack; install daad-edge[tensorrt]. "
        "An exported bundle gets one engine of its model.onnx. A taught bundle (`daad teach`) gets the engine of "
        "its backbone part, built once per device and shared by every product taught from it, and the engine of "
        "its own memory head (fp32, seconds to build). An engine already built for the same graph, GPU, TensorRT, "
        "precision and batch is reused; engines for anything else are never loaded.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--bundle", type=Path, help="bundle folder written by `daad export` or `daad teach`")
    target.add_argument("--backbone", type=Path, metavar="PART",
                        help="backbone part folder (`daad export --backbone`): build the device's shared backbone "
                        "engine before teaching products from it")  # fmt: skip
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="engine precision (default fp32); a taught product's memory head is always fp32")
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
    parser.add_argument("--whole", action="store_true",
                        help="build a taught bundle's model.onnx as one engine instead of backbone + head "
                        "(to compare their latency with `daad bench`; the line prefers backbone + head)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shared = f"the device's engine folder {device_engine_dir()} (set {DEVICE_ENGINE_DIR_VARIABLE} to move it)"
    if args.backbone is not None:
        engine = build_backbone_engine(args.backbone, args.precision, args.calib_data, args.batch, args.workspace_mb)
        print(f"backbone engine: {engine}\nit is kept in {shared}; every product taught from {args.backbone} uses it")
        return 0
    bundle = open_bundle(args.bundle)
    engines = build_bundle_engines(bundle, args.precision, args.calib_data, args.batch, args.workspace_mb, args.whole)
    if engines.whole is not None:
        print(f"engine: {engines.whole}")
    else:
        print(f"backbone engine: {engines.backbone}\n  (shared by every product taught from this backbone part, in "
              f"{shared})\nmemory head engine: {engines.head}")  # fmt: skip
    stale = stale_engines(bundle)
    if stale:
        print(f"{len(stale)} engine(s) in {bundle.engines_dir} belong to an earlier model.onnx and are never loaded; "
              "delete them to free space")  # fmt: skip
    return 0
