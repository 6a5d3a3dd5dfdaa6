from __future__ import annotations

from luman.server.main import main

main()
