"""The `daad` entry point: one verb per job, each registered by the package that implements it.

Packages register their verbs as Python entry points (group `daad.verbs` in pyproject.toml,
`verb = "module:main [extra]"`), so this module, on the floor, names no package above it. A verb
is imported only when called, so `daad run` on a Jetson never loads PyTorch; its one-line help is
the first line of its module's docstring, read without importing it; and a verb whose extra is
not installed says which one to install instead of ending in a traceback.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Callable

from runtime.signals import hold, release

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

# importlib.metadata and the help's parsing are imported where used: `main` must hold stop
# signals as soon after exec as it can (runtime.signals), and they take most of this module's import.

VERB_GROUP = "daad.verbs"
USAGE = "usage: daad <verb> [options]   (daad <verb> --help for details)"


def verbs(package: str | None = None) -> dict[str, EntryPoint]:
    """Registered verbs by name, in registration order; with `package`, only the ones it implements."""
    from importlib.metadata import entry_points

    found = {entry.name: entry for entry in entry_points(group=VERB_GROUP)}
    if package is None:
        return found
    return {name: entry for name, entry in found.items() if entry.module.split(".")[0] == package}


def verb_help(entry: EntryPoint) -> str:
    """The first paragraph of the verb module's docstring, without importing the module."""
    import ast
    import importlib.util
    import re
    from pathlib import Path

    try:
        spec = importlib.util.find_spec(entry.module)
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        return "(not installed)"
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return re.sub(r"^`?daad [\w-]+`?:\s*", "", first)


def usage(registered: dict[str, EntryPoint]) -> str:
    if not registered:
        return f"{USAGE}\n\nno verbs are registered: install daad-edge (pip install -e . in a checkout)"
    width = max(len(name) for name in registered)
    lines = [USAGE, "", "verbs:"]
    lines += [f"  {name.ljust(width)}  {verb_help(entry)}" for name, entry in registered.items()]
    return "\n".join(lines)


def run_verb(entry: EntryPoint, argv: list[str]) -> int:
    """Import the verb and run it; a third-party module it lacks names the extra to install.

    Stop signals are held while it imports (runtime.signals); a verb module that takes held
    signals gets them, any other has them delivered once it is imported.
    """
    from runtime.optional import extras_needed

    own = {"runtime", *(e.module.split(".")[0] for e in verbs().values())}
    with extras_needed(entry.extras, f"daad {entry.name}", own):
        verb = entry.load()
        if not getattr(sys.modules[entry.module], "TAKES_HELD_SIGNALS", False):
            release()
        return int(verb(argv) or 0)


def main(argv: list[str] | None = None, package: str | None = None) -> int:
    """Run one verb; with `package`, only the verbs that package implements (python -m PACKAGE)."""
    if threading.current_thread() is threading.main_thread():
        hold()  # the verb's imports take a while; a stop signal meanwhile waits for it (runtime.signals)
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), package)
    finally:
        release()


def _main(args: list[str], package: str | None) -> int:
    from runtime.errors import DaadError

    registered = verbs(package)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(registered))
        return 0
    verb, rest = args[0], args[1:]
    if verb not in registered:
        where = f"python -m {package}" if package else "daad"
        print(f"{where}: unknown verb {verb!r}\n\n{usage(registered)}", file=sys.stderr)
        return 2
    try:
        return run_verb(registered[verb], rest)
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
