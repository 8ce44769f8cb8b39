"""python -m demo: the same as `daad demo`."""

import sys

from runtime.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
