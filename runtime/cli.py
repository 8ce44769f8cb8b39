"""The `daad` entry point: one verb per job, each implemented in the package that owns it.

Verbs are looked up by module name and imported only when called, so `daad run` on a Jetson
never loads PyTorch, and `daad train` without torch says which extra to install.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

# verb -> (module with `main(argv) -> int`, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "synth": ("train.synth_cli", "make a synthetic product data set in MVTec AD layout"),
    "train": ("train.train_cli", "train a model (daad+, daad, memae, ae) on a data set folder"),
    "eval": ("train.eval_cli", "image/pixel AUROC, AUPRO, F1-max of a checkpoint or bundle"),
    "export": ("export.export_cli", "checkpoint -> bundle (model.onnx + model.json)"),
    "build": ("export.build_cli", "bundle -> TensorRT engine (fp32 / fp16 / int8)"),
    "calibrate": ("calibration.calibrate_cli", "set a product's threshold from good (and defective) samples"),
    "run": ("runtime.line.run_cli", "the camera loop"),
    "bench": ("runtime.bench.cli", "latency and throughput, per stage and per backend"),
    "demo": ("demo.pipeline", "all of the above on synthetic data, end to end, on the CPU"),
}


def usage() -> str:
    width = max(len(verb) for verb in VERBS)
    lines = ["usage: daad <verb> [options]   (daad <verb> --help for details)", "", "verbs:"]
    lines += [f"  {verb.ljust(width)}  {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None, package: str | None = None) -> int:
    """Run one verb; with `package`, only the verbs that package implements (python -m PACKAGE)."""
    from runtime.errors import DaadError

    args = list(sys.argv[1:] if argv is None else argv)
    if package is not None:
        allowed = {verb for verb, (module, _) in VERBS.items() if module.split(".")[0] == package}
        if args and args[0] not in allowed and args[0] not in ("-h", "--help", "help"):
            print(f"python -m {package}: verbs here are {', '.join(sorted(allowed))}", file=sys.stderr)
            return 2
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"daad: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(VERBS[verb][0])
        return int(module.main(rest) or 0)
    except DaadError as exc:
        print(f"daad {verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"daad {verb}: interrupted", file=sys.stderr)
        return 130


def run_script(entry: Callable[[], int], name: str) -> None:
    """Run a `python -m` script's main like a verb: a DaadError prints its message and exits 2."""
    from runtime.errors import DaadError

    try:
        sys.exit(entry())
    except DaadError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
