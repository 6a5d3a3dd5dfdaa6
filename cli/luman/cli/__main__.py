"""`python -m luman.cli`, same as the `luman` script."""

from __future__ import annotations

from luman.cli.main import main

main()
