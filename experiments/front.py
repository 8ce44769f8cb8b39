"""Accuracy against cost of every configuration tried: a table and the plot of its front.

    python -m experiments.front runs/realdata-20ep runs/realdata-50ep --out docs/img/realdata_front.png

Each folder is the --out of one `python -m experiments.realdata` call (one configuration; its
folder name labels it). Every (configuration, data set, model kind) becomes a point: GFLOPs per
image against mean image AUROC and pixel AUROC. The front joins, per data set, the points no
other point beats on both accuracy and cost. Prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.runs import finish_plot, load_pyplot
from runtime.atomic import atomic_write_text
from runtime.errors import DataError


def read_points(folders: list[Path]) -> list[dict[str, Any]]:
    """(configuration, data set, kind, GFLOPs, latency, image / pixel AUROC, AUPRO) from each summary.json."""
    points = []
    for folder in folders:
        path = folder / "summary.json"
        if not path.is_file():
            raise DataError(f"{path} does not exist: run `python -m experiments.realdata --out {folder}` first")
        for record in json.loads(path.read_text(encoding="utf-8")):
            points.append({
                "config": folder.name, "product": record["product"], "kind": record["kind"],
                "gflops": record["gflops"][0], "fastest_ms": record["fastest_ms"][0],
                "image_auroc": record["image_auroc"][0], "pixel_auroc": record["pixel_auroc"][0], "aupro": record["aupro"][0],
            })  # fmt: skip
    return points


def front(points: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The points of one data set that no other beats on `metric` at the same or lower GFLOPs."""
    ranked = sorted((p for p in points if p[metric] is not None and p["gflops"]), key=lambda p: (p["gflops"], -p[metric]))
    kept: list[dict[str, Any]] = []
    for point in ranked:
        if not kept or point[metric] > kept[-1][metric]:
            kept.append(point)
    return kept


def table_markdown(points: list[dict[str, Any]]) -> str:
    lines = ["| configuration | data set | model | GFLOPs | ORT 1 thread fastest ms | image AUROC | pixel AUROC | AUPRO | on the image front |",
             "|" + "---|" * 9]
    on_front = {id(p) for name in dict.fromkeys(p["product"] for p in points)
                for p in front([q for q in points if q["product"] == name], "image_auroc")}  # fmt: skip
    for p in sorted(points, key=lambda p: (p["product"], p["gflops"] or 0, p["config"])):
        cells = [p["config"], p["product"], p["kind"], _number(p["gflops"]), _number(p["fastest_ms"], 2),
                 _number(p["image_auroc"]), _number(p["pixel_auroc"]), _number(p["aupro"]), "yes" if id(p) in on_front else ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_front(points: list[dict[str, Any]], path: Path) -> Path:
    """Image and pixel AUROC against GFLOPs, one colour per data set, its front as a line."""
    plt = load_pyplot("the accuracy/cost plot")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for axis, metric in zip(axes, ("image_auroc", "pixel_auroc")):
        for name in dict.fromkeys(p["product"] for p in points):
            chosen = [p for p in points if p["product"] == name and p[metric] is not None and p["gflops"]]
            (line,) = axis.plot([p["gflops"] for p in front(chosen, metric)], [p[metric] for p in front(chosen, metric)],
                                linewidth=1.5, label=f"{name} front")  # fmt: skip
            axis.scatter([p["gflops"] for p in chosen], [p[metric] for p in chosen], color=line.get_color(), s=18)
            for p in chosen:
                axis.annotate(f"{p['kind']} {p['config']}", (p["gflops"], p[metric]), fontsize=6, alpha=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("GFLOPs per image")
        axis.set_ylabel(metric.replace("_", " ").replace("auroc", "AUROC"))
    axes[0].set_title("accuracy against cost of every configuration tried", fontsize=10)
    for axis in axes[:-1]:  # finish_plot draws the last one's grid and legend
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return finish_plot(plt, figure, axes[-1], path)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.front", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="--out folders of experiments.realdata, one per configuration")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write (the table goes next to it as .md)")
    parser.add_argument("--sets", nargs="*", help="only these data sets (e.g. kolektorsdd tire 'synthetic mean')")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    points = [p for p in read_points(args.folders) if not args.sets or p["product"] in args.sets]
    plot_front(points, args.out)
    table = table_markdown(points)
    atomic_write_text(args.out.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "python -m experiments.front")
