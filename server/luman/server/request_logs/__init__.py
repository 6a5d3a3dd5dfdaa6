"""The request log: a bounded queue and a background writer behind RequestLoggingInterceptor,
retention pruning, and the queries behind `luman-server logs`."""

from __future__ import annotations
