"""Plain-text and HTML bodies from the files in templates/: `<name>.txt` and `<name>.html`
(a body fragment that layout.html wraps), with string.Template `$name` placeholders.

Values are inserted as given into the text and HTML-escaped into the HTML, so a name such as
`<b>Eve</b>` reaches the reader as text in both. A missing value is a KeyError: a template and
its renderer disagreeing is a bug to see in the tests, not a message with a hole in it.
"""

from __future__ import annotations

import functools
import html
import string
from collections.abc import Mapping
from pathlib import Path

from luman.server.mail.message import Mail


@functools.cache
def _template(file_name: str) -> string.Template:
    return string.Template((Path(__file__).parent / "templates" / file_name).read_text("utf-8"))


def render(template: str, to: str, subject: str, values: Mapping[str, str]) -> Mail:
    """The message `template` makes with `values`, to `to`, titled `subject`."""
    text = _template(f"{template}.txt").substitute(values)
    escaped = {key: html.escape(value) for key, value in values.items()}
    body = _template(f"{template}.html").substitute(escaped)
    page = _template("layout.html").substitute(subject=html.escape(subject), body=body)
    return Mail(to=to, subject=subject, text=text, html=page)
