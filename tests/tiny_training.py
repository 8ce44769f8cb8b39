"""A network small enough to train in a second: the experiments' end-to-end tests share it."""

from __future__ import annotations

import json
from pathlib import Path

from train.synth import SynthConfig, write_product

TINY = {
    "model": {
        "widths": [4, 8, 8, 8],
        "memories": [{"block_h": b, "block_w": b, "slots": 8} for b in (4, 2, 2, 1)],
        "discriminator_widths": [4, 4, 8, 8],
    },
    "train": {"lr": 5e-3},
}


def tiny_products(root: Path, products: tuple[str, ...]) -> tuple[Path, Path]:
    """32 px synthetic products under `root` and the tiny network's config file: (root, config)."""
    for product in products:
        write_product(root, product, SynthConfig(image_size=32, train=8, test_good=3, test_defect=1))
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    return root, config
