"""``python -m modelship.serve --model PATH`` (same flags as ``modelship serve``)."""

import sys

from .cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
