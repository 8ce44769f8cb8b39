"""Output paths checked before anything is written: never onto an input, into a bundle, or onto each other.

Every verb that writes files calls `check_outputs` at start with what it reads and what it will
write, each under the option name the user typed, so a slip such as `--output` equal to
`--source` or `--events BUNDLE/model.json` is one line naming both options, not a destroyed file.
Paths are compared after resolving symlinks, and by inode where both exist (hard links).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from runtime.errors import DaadError

PathLike = str | os.PathLike


class OutputPathError(DaadError):
    """An output path would overwrite or write into something the run reads or writes elsewhere."""


def check_outputs(inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]) -> None:
    """Refuse outputs that resolve to an input, lie inside an input folder, or collide with each other.

    `inputs` and `outputs` map the option name (e.g. "--source", "--bundle") to its path; None
    entries are skipped. An input folder protects everything under it (a bundle, an image folder);
    an output folder may hold other outputs (an events file beside NG images), but two outputs may
    not be the same path.
    """
    sources = {name: Path(path) for name, path in inputs.items() if path is not None}
    targets = {name: Path(path) for name, path in outputs.items() if path is not None}
    for name, target in targets.items():
        for input_name, source in sources.items():
            if _same(target, source):
                raise OutputPathError(
                    f"{name} {target} is the same file as {input_name} {source}: writing it would destroy "
                    f"the input; choose another path for {name}."
                )
            if source.is_dir() and _inside(target, source):
                raise OutputPathError(
                    f"{name} {target} lies inside {input_name} {source}, which this command reads: "
                    f"choose a path for {name} outside {source}."
                )
    names = list(targets)
    for position, name in enumerate(names):
        for other in names[position + 1 :]:
            if _same(targets[name], targets[other]):
                raise OutputPathError(
                    f"{name} and {other} are the same path ({targets[name]}): one would overwrite the other; "
                    f"give them different paths."
                )


def _same(first: Path, second: Path) -> bool:
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)  # hard links, bind mounts
    except OSError:  # one of them does not exist yet
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
