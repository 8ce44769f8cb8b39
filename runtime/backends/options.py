"""The backend options of every verb that scores images: declared once, so they read the same.

`daad run`, `calibrate`, `eval` and `bench` take --backend, --precision, --threads, --providers
and (where a verb scores several frames per call) --batch with the same names, choices and help;
`bench` takes comma-separated lists of the same choices to compare them.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from runtime.backends import BACKENDS, PRECISIONS, Backend, choose_backend, open_backend
from runtime.bundle import Bundle


def positive(kind: type, most: float = math.inf, why: str = "") -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` above zero and at most `most` (`why` says where that comes from)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value) or value <= 0:  # float("nan") <= 0 is False: NaN must be named
            raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g} ({why}), got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def not_negative(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more (NaN would wait forever or never)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, got {text}")
    return value


def max_threads() -> int:
    """More threads than 4 per core only add switching: 2,000 ran no frame in a minute, 100,000 ran out of memory."""
    return 4 * (os.cpu_count() or 1)


def choice_list(item: Callable[[str], Any], choices: Sequence[Any] | None = None) -> Callable[[str], tuple]:
    """An argparse type: a comma-separated list whose items each pass `item` (and are in `choices`)."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} ({exc})") from exc
        unknown = [value for value in values if choices is not None and value not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {', '.join(map(str, choices or ()))}" if unknown else "empty list"
            )
        return values

    parse.__name__ = "list"
    return parse


@dataclass(frozen=True)
class BackendOptions:
    """Which backend scores, at which precision, with how many threads and frames per call."""

    backend: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    providers: tuple[str, ...] | None = None
    batch: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BackendOptions":
        return cls(args.backend, args.precision, args.threads, args.providers, getattr(args, "batch", 1))

    def filled(self, backend: str, precision: str) -> "BackendOptions":
        """These options with an unset backend or precision taken from the arguments."""
        return replace(self, backend=self.backend or backend, precision=self.precision or precision)

    def backend_name(self, bundle: Bundle) -> str:
        """The backend `open` will load: `auto` resolved as open_backend resolves it (to check a threshold first)."""
        return choose_backend(bundle, self.precision, self.batch).name if self.backend == "auto" else self.backend

    def open(self, bundle: Bundle) -> Backend:
        providers = list(self.providers) if self.providers else None
        return open_backend(bundle, self.backend, self.precision, self.threads, providers, self.batch)


def add_backend_options(
    parser: argparse.ArgumentParser,
    *,
    backend: str | None = "auto",
    precision: str | None = "fp32",
    batch: bool = True,
    compare: Sequence[str] | None = None,
    unset: str = "",
) -> None:
    """Add the options; with `None` defaults the verb fills them in later (BackendOptions.filled),
    as `unset` tells the user (calibrate --check: from threshold.json).

    With `compare` (the backend names a comparison may list, e.g. bench's PyTorch reference too),
    --backend, --precision and --batch take comma-separated lists and default to all of `compare`,
    fp32 and batch 1.
    """
    group = parser.add_argument_group("backend")
    add = group.add_argument
    auto = ("auto: TensorRT when installed and the bundle has an engine for this GPU, else ONNX Runtime; "
            "threshold.json is bound to the backend it was calibrated on")
    reduced = "fp16/int8 need a TensorRT engine from `daad build`; a threshold is bound to its precision"
    if compare is None:
        add("--backend", choices=BACKENDS, default=backend, help=f"{auto} (default {backend or 'auto'}{unset})")
        add("--precision", choices=PRECISIONS, default=precision,
            help=f"fp32, fp16 or int8; {reduced} (default {precision or 'fp32'}{unset})")
    else:
        add("--backend", type=choice_list(str, compare), default=tuple(compare), metavar="LIST",
            help=f"comma-separated: {', '.join(compare)}; those not installed are reported as skipped "
            "(default: all)")
        add("--precision", type=choice_list(str, PRECISIONS), default=("fp32",), metavar="LIST",
            help=f"comma-separated: {', '.join(PRECISIONS)}; {reduced} (default fp32)")
    threads = positive(int, max_threads(), f"4 x the {os.cpu_count() or 1} cores here")
    add("--threads", type=threads, default=None, metavar="N",
        help=f"CPU threads of ONNX Runtime (and of the PyTorch reference) (default: all cores; at most {max_threads()})")
    add("--providers", type=choice_list(str), default=None, metavar="LIST",
        help="ONNX Runtime execution providers, comma-separated: cpu, cuda, tensorrt (default cpu)")
    if batch and compare is None:
        add("--batch", type=positive(int), default=1, metavar="N",
            help="frames per inference call; TensorRT needs an engine built for this batch (default 1)")
    elif batch:
        add("--batch", type=choice_list(positive(int)), default=(1,), metavar="LIST",
            help="comma-separated batch sizes; TensorRT opens an engine built for each (default 1)")
