from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""Returns the current time as an aware UTC datetime. Tests inject a fake one."""


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
