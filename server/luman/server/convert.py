"""Conversions shared by the features: times and ids."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
