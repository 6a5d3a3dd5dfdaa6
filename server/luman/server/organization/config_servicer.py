"""OrganizationConfigService over gRPC: checks the request's shape (the document's size and
depth included), calls OrganizationConfigService, converts the result.

The document is stored as canonical JSON: keys sorted, no spaces, UTF-8, numbers that are
whole (and exact in a double) written as integers. ORGANIZATION_CONFIG_MAX_BYTES counts those
bytes, so the limit does not depend on how a client happened to encode the document.
"""

from __future__ import annotations

import json
import math

import grpc
from google.protobuf import struct_pb2

from luman.interceptors.principal import current_principal
from luman.organization.v1 import config_service_pb2, config_service_pb2_grpc
from luman.server.convert import write_timestamp
from luman.server.organization import convert
from luman.server.organization.config_service import (
    OrganizationConfigService,
    OrganizationConfigView,
)
from luman.server.validation import Violations

MAX_DEPTH = 32  # the top-level object is depth 1
MAX_ETAG_LENGTH = 64
_EXACT_INTEGER = 2**53  # doubles hold every integer up to this one exactly

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


class DocumentError(ValueError):
    """The Struct cannot be stored as a JSON document; the message says why."""


def _depth(struct: struct_pb2.Struct) -> int:
    """How deeply objects and lists nest in `struct`, counting it as 1 (iterative, so that a
    hostile document cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[struct_pb2.Struct | struct_pb2.ListValue, int]] = [(struct, 1)]
    while stack:
        container, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        values = (
            container.fields.values()
            if isinstance(container, struct_pb2.Struct)
            else container.values
        )
        for value in values:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((value.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((value.list_value, depth + 1))
    return deepest


def _plain(value: struct_pb2.Value) -> JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: _plain(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise DocumentError("numbers must be finite (JSON has no NaN or Infinity)")
        if number.is_integer() and abs(number) <= _EXACT_INTEGER:
            return int(number)
        return number
    if kind == "null_value":
        return None
    raise DocumentError("a value has no kind set")


def canonical_json(struct: struct_pb2.Struct) -> str:
    """The document as canonical JSON (module docstring). Call after checking its depth.

    Raises:
        DocumentError: a number is NaN or infinite, or a Value is empty.
    """
    document = {key: _plain(item) for key, item in struct.fields.items()}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_to_proto(view: OrganizationConfigView) -> config_service_pb2.OrganizationConfig:
    message = config_service_pb2.OrganizationConfig(
        organization_id=str(view.organization_id), version=view.version, etag=view.etag
    )
    # Present even when empty: over HTTP the document is always an object, never absent.
    message.config.SetInParent()
    message.config.update(json.loads(view.document))
    if view.update_time is not None:
        write_timestamp(message.update_time, view.update_time)
    if view.updated_by is not None:
        message.updated_by = str(view.updated_by)
    return message


class OrganizationConfigServicer(config_service_pb2_grpc.OrganizationConfigServiceServicer):
    def __init__(self, service: OrganizationConfigService, max_bytes: int) -> None:
        self._service = service
        self._max_bytes = max_bytes

    def GetOrganizationConfig(  # noqa: N802 - grpc names the methods
        self,
        request: config_service_pb2.GetOrganizationConfigRequest,
        context: grpc.ServicerContext,
    ) -> config_service_pb2.GetOrganizationConfigResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        v.raise_if_any()
        view = self._service.get(current_principal(), ref)
        return config_service_pb2.GetOrganizationConfigResponse(
            organization_config=config_to_proto(view)
        )

    def UpdateOrganizationConfig(  # noqa: N802 - grpc names the methods
        self,
        request: config_service_pb2.UpdateOrganizationConfigRequest,
        context: grpc.ServicerContext,
    ) -> config_service_pb2.UpdateOrganizationConfigResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        document = self._document(v, request)
        if len(request.etag) > MAX_ETAG_LENGTH:
            v.add("etag", "is not an etag of this configuration")
        v.raise_if_any()
        assert document is not None
        view = self._service.update(current_principal(), ref, document, request.etag)
        return config_service_pb2.UpdateOrganizationConfigResponse(
            organization_config=config_to_proto(view)
        )

    def _document(
        self, v: Violations, request: config_service_pb2.UpdateOrganizationConfigRequest
    ) -> str | None:
        if not request.HasField("config"):
            v.add("config", "is required: a JSON object ({} empties the configuration)")
            return None
        if _depth(request.config) > MAX_DEPTH:
            v.add("config", f"nests objects and lists more than {MAX_DEPTH} levels deep")
            return None
        try:
            document = canonical_json(request.config)
        except DocumentError as exc:
            v.add("config", str(exc))
            return None
        size = len(document.encode())
        if size > self._max_bytes:
            v.add(
                "config",
                f"is {size} bytes as canonical JSON, more than the limit of {self._max_bytes} "
                "(ORGANIZATION_CONFIG_MAX_BYTES)",
            )
            return None
        return document
