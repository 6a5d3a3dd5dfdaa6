"""The metadata keys the chain reads and writes, shared with the HTTP gateway.

The HTTP gateway hands its calls these keys and turns the rate-limit and status keys of the
answer back into HTTP headers, so each name is written here once.
"""

from __future__ import annotations

# Read from the call.
AUTHORIZATION = "authorization"
USER_AGENT = "user-agent"
FORWARDED_FOR = "x-forwarded-for"
# The client's id for the call, kept on its audit events (audit/record.py).
REQUEST_ID = "x-request-id"
# W3C trace-context: the caller's trace, which the call's span joins when tracing is on
# (tracing.py). HTTP headers of the same names.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# Written on the answer (trailing metadata), under their usual HTTP names.
RATE_LIMIT_LIMIT = "x-ratelimit-limit"
RATE_LIMIT_REMAINING = "x-ratelimit-remaining"
RATE_LIMIT_RESET = "x-ratelimit-reset"
RETRY_AFTER = "retry-after"
RATE_LIMIT_HEADERS = (RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET, RETRY_AFTER)
# Written by a method whose answer may be cached (GetJwks, as initial metadata); the gateway
# sends it as the HTTP header and adds an ETag (gateway/caching.py).
CACHE_CONTROL = "cache-control"
# The google.rpc.Status of an error, serialized (grpcio-status's key).
STATUS_DETAILS = "grpc-status-details-bin"
