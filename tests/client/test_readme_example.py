"""The README's Python client example, run as written against a live server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from luman.server.app import App

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_client_example_runs(app: App) -> None:
    block = re.search(r"```python\n(from luman\.client import.*?)```", README.read_text(), re.S)
    assert block is not None, "README lost its Python client example"
    code = block.group(1).replace('"localhost:3000"', f'"127.0.0.1:{app.port}"')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own documentation
    lines = out.getvalue().splitlines()
    assert lines[-1] == "ORGANIZATION_NOT_FOUND"
    assert any(line.startswith("grace@example.com") for line in lines)
