"""python -m engines <verb>: the same verbs as `daad`, those this package implements."""

import sys

from runtime.cli import main

sys.exit(main(package="engines"))
