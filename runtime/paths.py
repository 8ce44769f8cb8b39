"""Output paths checked before anything is written: never onto an input, into a bundle, or onto each other.

Every verb that writes files calls `check_outputs` at start with what it reads and what it will
write, each under the option name the user typed, so a slip such as `--output` equal to
`--source` or `--events BUNDLE/model.json` is one line naming both options, not a destroyed file.
Paths are compared after resolving symlinks, and by device and inode where both exist (hard
links); an existing output with more than one link is also looked for, by device and inode, among
the files of every input folder, so a hard link to a bundle's threshold.json or to a source image,
made anywhere, is still that file.
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
            linked = _linked_inside(target, source) if source.is_dir() else None
            if linked is not None:
                raise OutputPathError(
                    f"{name} {target} is a hard link to {linked} inside {input_name} {source}: writing it would "
                    f"change that file; choose another path for {name}."
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


def _linked_inside(path: Path, folder: Path) -> Path | None:
    """The file under `folder` that `path` is a hard link to, if any (only files with several links are looked for)."""
    try:
        status = path.stat()
    except OSError:  # not there yet: a new file is nobody's link
        return None
    if status.st_nlink < 2 or not path.is_file():
        return None
    for root, _, names in os.walk(folder):
        for name in names:
            candidate = Path(root) / name
            try:
                found = candidate.stat(follow_symlinks=False)
            except OSError:
                continue
            if (found.st_dev, found.st_ino) == (status.st_dev, status.st_ino):
                return candidate
    return None
