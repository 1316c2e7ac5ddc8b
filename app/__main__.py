"""`python -m app` is `twokey serve`."""

from app.cli import main

raise SystemExit(main(["serve"]))
