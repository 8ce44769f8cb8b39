"""`daad synth`: write synthetic product data sets in MVTec AD layout and print their summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.atomic import check_output_folder
from runtime.dataset import format_summary, summarize
from train.synth import SynthConfig, check_products, write_product
from train.synth_defects import DEFECTS
from train.synth_products import PRODUCTS


def build_parser() -> argparse.ArgumentParser:
    products = "\n".join(f"  {name:8s} {product.description}" for name, product in PRODUCTS.items())
    parser = argparse.ArgumentParser(
        prog="daad synth",
        description="Write synthetic product data sets in MVTec AD layout, one folder per product: "
        "train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png. "
        "The same --seed writes the same bytes.",
        epilog=f"products:\n{products}\ndefects: {', '.join(DEFECTS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SynthConfig()
    parser.add_argument("--out", type=Path, required=True, help="folder to write <out>/<product>/ into")
    parser.add_argument("--products", default=",".join(PRODUCTS), help="comma-separated products (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="side of the square images in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed; same seed, same files (default: %(default)s)")
    parser.add_argument("--train", type=int, default=defaults.train, help="good training images per product (default: %(default)s)")
    parser.add_argument("--test-good", type=int, default=defaults.test_good, help="good test images per product (default: %(default)s)")
    parser.add_argument("--test-defect", type=int, default=defaults.test_defect, help="test images per defect type and product (default: %(default)s)")
    parser.add_argument(
        "--severity", type=float, default=defaults.severity,
        help="fraction of each defect's contrast kept, in (0, 1]; the same defects, fainter (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace product folders a previous `daad synth` wrote")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    products = check_products([name.strip() for name in args.products.split(",") if name.strip()])
    try:
        config = SynthConfig(args.image_size, args.seed, args.train, args.test_good, args.test_defect, args.severity)
    except ValueError as exc:
        build_parser().error(str(exc))
    check_output_folder(args.out)
    folders = [write_product(args.out, product, config, args.overwrite, progress=True) for product in products]
    for folder in folders:
        print(format_summary(summarize(folder)))
    return 0
