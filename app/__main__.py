"""`python -m app` is `twokey`; with no command, `twokey serve`."""

import sys

from app.cli import main

raise SystemExit(main(sys.argv[1:] or ["serve"]))
