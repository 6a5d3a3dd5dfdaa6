from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""Returns the current time as an aware UTC datetime. Tests inject a fake one."""


# datetime.now(UTC) itself, without a Python frame around it: the token cache and the request
# log read the clock on every call.
system_clock: Clock = functools.partial(dt.datetime.now, dt.UTC)
