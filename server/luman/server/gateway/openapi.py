"""The OpenAPI 3.1 document of the gateway, generated from the route table and the descriptors.

Paths come from the google.api.http annotations (the same RouteTable the gateway serves),
schemas from the messages, descriptions from the proto comments. The schemas describe what
transcode.py actually sends and accepts:

- property names are json names (lowerCamelCase);
- response schemas list as `required` every field without presence, because responses always
  include those (at their default values); message fields, oneof members, `optional` fields
  and repeated fields marked `(luman.api.v1.omit_empty)` are optional;
- request bodies are inline schemas of the request message minus the fields the path sets, with
  `additionalProperties: false` (unknown fields are a 400) and at most one member per oneof;
- enums are their value names; Timestamps are `date-time` strings; int64 values are strings;
- every error is a google.rpc.Status: `{code, message, details[]}`, details as Any with @type.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)

from luman.api.v1 import annotations_pb2 as api_annotations_pb2
from luman.server import methods
from luman.server.gateway.routes import Route, RouteTable
from luman.server.gateway.transcode import omits_empty

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BEARER = "bearerAuth"

_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_FLOAT = {
    "anyOf": [
        {"type": "number"},
        {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
    ]
}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: _FLOAT,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.DoubleValue": _FLOAT,
    "google.protobuf.FloatValue": _FLOAT,
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": _INT32,
    "google.protobuf.UInt32Value": _UINT32,
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
}
_STATUS_SCHEMAS: dict[str, dict[str, Any]] = {
    "google.protobuf.Any": {
        "type": "object",
        "description": "A detail message: `@type` names it, the other keys are its fields.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.rpc.Status": {
        "type": "object",
        "description": (
            "Every error. `code` is the gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, "
            "16 UNAUTHENTICATED, ...). `details` holds a google.rpc.ErrorInfo whose `reason` "
            "is a stable UPPER_SNAKE identifier, plus a google.rpc.BadRequest listing the bad "
            "fields or a google.rpc.RetryInfo when the call may be retried later."
        ),
        "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/google.protobuf.Any"},
            },
        },
        "required": ["code", "message", "details"],
    },
    "luman.gateway.OAuthError": {
        "type": "object",
        "description": (
            "An OAuth 2.0 error (RFC 6749 section 5.2), on the OAuth endpoints: `error` is "
            "authorization_pending, slow_down, access_denied, expired_token, invalid_grant, "
            "invalid_request, temporarily_unavailable or server_error."
        ),
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
        },
        "required": ["error", "error_description"],
    },
    "luman.gateway.Health": {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "ready", "unavailable"]}},
        "required": ["status"],
    },
}
_RATE_LIMIT_HEADERS: dict[str, Any] = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed in the current window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the window resets.",
        "schema": {"type": "integer"},
    },
}
_DESCRIPTION = """\
HTTP/JSON door to the Luman gRPC services, transcoded from their `google.api.http`
annotations. Both doors share one interceptor chain: authentication, rate limiting and request
logging behave the same on either.

JSON follows protobuf's canonical mapping: lowerCamelCase names in responses (requests accept
proto names too), fields without presence always present, enums as names, Timestamps as RFC
3339. Unknown fields are rejected with 400.

Authenticate with `Authorization: Bearer <token>`: an access token from /auth/login or
/auth/register, or a CLI token from /auth/cli-login or /auth/cli-tokens. Each operation lists
the token scope it needs (`read`, `write` or `introspect`) in its security requirement; a token
without it gets 403 with reason INSUFFICIENT_SCOPE. One that lists none (/auth/cli-logout)
takes any valid token. Access tokens carry every user scope (`read`, `write`); `introspect`
belongs to service accounts only, whose access tokens come from /auth/service-token and are
refused (403 USER_REQUIRED) by every operation that acts for a user.
"""


def _scope_of(method: MethodDescriptor) -> str | None:
    """The token scope the contract declares for `method` (None: none declared)."""
    scope = method.GetOptions().Extensions[api_annotations_pb2.access].scope
    return methods.scope_name(scope) if scope else None


def build_document(
    table: RouteTable, comments: Mapping[str, str], *, version: str
) -> dict[str, Any]:
    builder = _Builder(comments)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, str]] = {}
    for route in table.routes:
        service = route.method.containing_service
        tag = {"name": service.name}
        if service.full_name in comments:
            tag["description"] = comments[service.full_name]
        tags.setdefault(service.name, tag)
        item = paths.setdefault(route.template.openapi_path, {})
        item[route.http_method.lower()] = builder.operation(route)
    paths.update(_health_paths())
    tags["Health"] = {"name": "Health", "description": "Probes for load balancers."}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Luman API", "version": version, "description": _DESCRIPTION},
        "tags": list(tags.values()),
        "security": [{BEARER: []}],
        "paths": paths,
        "components": {
            "schemas": {**dict(sorted(builder.schemas.items())), **_STATUS_SCHEMAS},
            "responses": {
                "Error": {
                    "description": "An error, as a google.rpc.Status.",
                    "headers": {
                        "Retry-After": {
                            "description": (
                                "Seconds to wait before retrying (429: rate limited or load "
                                "shed; 503: a dependency is away)."
                            ),
                            "schema": {"type": "integer"},
                        },
                        **_RATE_LIMIT_HEADERS,
                    },
                    "content": {JSON: {"schema": _ref("google.rpc.Status")}},
                },
                "OAuthError": {
                    "description": (
                        "The protocol's answers as RFC 6749 errors (HTTP 400, or 429 and 503 "
                        "with Retry-After); the gateway's own refusals of a malformed request "
                        "as a google.rpc.Status."
                    ),
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying (429, 503).",
                            "schema": {"type": "integer"},
                        },
                        **_RATE_LIMIT_HEADERS,
                    },
                    "content": {
                        JSON: {
                            "schema": {
                                "anyOf": [
                                    _ref("luman.gateway.OAuthError"),
                                    _ref("google.rpc.Status"),
                                ]
                            }
                        }
                    },
                },
            },
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (JWT) or a CLI token (lmn_...).",
                }
            },
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _summary(comment: str) -> str:
    first = comment.split("\n\n", 1)[0].replace("\n", " ")
    sentence, dot, _ = first.partition(". ")
    return sentence + "." if dot else first


class _Builder:
    def __init__(self, comments: Mapping[str, str]) -> None:
        self._comments = comments
        self.schemas: dict[str, dict[str, Any]] = {}

    def operation(self, route: Route) -> dict[str, Any]:
        method = route.method
        comment = self._comments.get(method.full_name, "")
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "tags": [method.containing_service.name],
        }
        if comment:
            operation["summary"] = _summary(comment)
            operation["description"] = comment
        if route.public:
            operation["security"] = []
        else:
            # OpenAPI 3.1: a bearer requirement may list the roles it needs; ours are scopes.
            # A `no_scope` RPC (CliLogout) takes any valid token: a bearer without scopes.
            scope = _scope_of(method)
            operation["security"] = [{BEARER: [scope] if scope is not None else []}]
        parameters = self._path_parameters(route) + self._query_parameters(route)
        if parameters:
            operation["parameters"] = parameters
        body = self._request_body(route)
        if body is not None:
            operation["requestBody"] = body
        output = method.output_type
        if route.response_body:
            schema = self._field(output.fields_by_name[route.response_body])
        else:
            schema = self.message_ref(output)
        operation["responses"] = {
            "200": {
                "description": self._comments.get(output.full_name, "OK"),
                "headers": _RATE_LIMIT_HEADERS,
                "content": {JSON: {"schema": schema}},
            },
            "default": {
                "$ref": "#/components/responses/"
                + ("OAuthError" if route.oauth_endpoint else "Error")
            },
        }
        return operation

    def _path_parameters(self, route: Route) -> list[dict[str, Any]]:
        parameters = []
        for variable in route.template.variables:
            field = route.method.input_type.fields_by_name[variable.field_path[0]]
            for name in variable.field_path[1:]:
                assert field.message_type is not None  # checked when the routes were built
                field = field.message_type.fields_by_name[name]
            parameter = {
                "name": variable.name,
                "in": "path",
                "required": True,
                "schema": self._single(field),
            }
            self._describe(parameter, field)
            parameters.append(parameter)
        return parameters

    def _query_parameters(self, route: Route) -> list[dict[str, Any]]:
        if route.body == "*":
            return []
        excluded = route.bound_fields() | {route.body}
        parameters: list[dict[str, Any]] = []
        self._query_fields(route.method.input_type, "", excluded, parameters, set())
        return parameters

    def _query_fields(
        self,
        descriptor: Descriptor,
        prefix: str,
        excluded: frozenset[str],
        out: list[dict[str, Any]],
        visiting: set[str],
    ) -> None:
        visiting = visiting | {descriptor.full_name}
        for field in descriptor.fields:
            if field.name in excluded:
                continue
            nested = field.message_type
            repeated = field.is_repeated
            if nested is not None and nested.full_name not in _WELL_KNOWN:
                # Dotted names reach into nested messages (not maps, not repeated, no cycles).
                if not repeated and nested.full_name not in visiting:
                    self._query_fields(
                        nested, f"{prefix}{field.json_name}.", frozenset(), out, visiting
                    )
                continue
            schema = self._single(field)
            parameter: dict[str, Any] = {"name": prefix + field.json_name, "in": "query"}
            if repeated:
                parameter.update(
                    schema={"type": "array", "items": schema}, style="form", explode=True
                )
            else:
                parameter["schema"] = schema
            self._describe(parameter, field)
            out.append(parameter)

    def _request_body(self, route: Route) -> dict[str, Any] | None:
        if not route.body:
            return None
        if route.body != "*":
            field = route.method.input_type.fields_by_name[route.body]
            body = {"required": True, "content": {JSON: {"schema": self._field(field)}}}
            self._describe(body, field)
            return body
        schema = self._input_object(route.method.input_type, route.bound_fields())
        if not schema["properties"]:
            return None  # an empty message: the body may be omitted (or be `{}`)
        content = {JSON: {"schema": schema}}
        if route.oauth_endpoint:
            # OAuth clients post forms (gateway/oauth.py): the same fields, as text.
            content[FORM] = {"schema": schema}
        return {"required": True, "content": content}

    def _input_object(self, descriptor: Descriptor, excluded: frozenset[str]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for field in descriptor.fields:
            if field.name not in excluded:
                properties[field.json_name] = self._described(field)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        comment = self._comments.get(descriptor.full_name)
        if comment:
            schema["description"] = comment
        # json_format refuses two members of one oneof: say so, pair by pair.
        exclusive = []
        for oneof in descriptor.oneofs:
            members = [f.json_name for f in oneof.fields if f.json_name in properties]
            for pair in itertools.combinations(members, 2):
                exclusive.append({"not": {"required": list(pair)}})
        if exclusive:
            schema["allOf"] = exclusive
        return schema

    def message_ref(self, descriptor: Descriptor) -> dict[str, Any]:
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name == "google.protobuf.Any":
            return _ref(name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may refer to themselves
            self.schemas[name] = self._output_object(descriptor)
        return _ref(name)

    def _output_object(self, descriptor: Descriptor) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in descriptor.fields:
            properties[field.json_name] = self._described(field)
            # transcode.py always prints fields without presence (but omit_empty ones).
            if not field.has_presence and not omits_empty(field):
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        comment = self._comments.get(descriptor.full_name)
        if comment:
            schema["description"] = comment
        return schema

    def _described(self, field: FieldDescriptor) -> dict[str, Any]:
        schema = self._field(field)
        self._describe(schema, field)
        return schema

    def _describe(self, target: dict[str, Any], field: FieldDescriptor) -> None:
        comment = self._comments.get(field.full_name)
        if comment:
            target["description"] = comment

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            return {
                "type": "object",
                "additionalProperties": self._single(nested.fields_by_name["value"]),
            }
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message_ref(field.message_type)
        if field.enum_type is not None:
            return self._enum_ref(field.enum_type)
        return dict(_SCALARS[field.type])

    def _enum_ref(self, enum: EnumDescriptor) -> dict[str, Any]:
        name = enum.full_name
        if name not in self.schemas:
            values = [self._comments.get(f"{name}.{value.name}") for value in enum.values]
            parts = [self._comments.get(name, ""), "\n".join(f"- {c}" for c in values if c)]
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.values]}
            description = "\n\n".join(part for part in parts if part)
            if description:
                schema["description"] = description
            self.schemas[name] = schema
        return _ref(name)


def _health_paths() -> dict[str, dict[str, Any]]:
    health = {JSON: {"schema": _ref("luman.gateway.Health")}}
    return {
        "/healthz": {
            "get": {
                "operationId": "Health_Live",
                "summary": "Liveness: the process is up.",
                "tags": ["Health"],
                "security": [],
                "responses": {"200": {"description": "The process is up.", "content": health}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "Health_Ready",
                "summary": "Readiness: the database answers.",
                "tags": ["Health"],
                "security": [],
                "responses": {
                    "200": {"description": "Ready to serve.", "content": health},
                    "503": {"description": "The database does not answer.", "content": health},
                },
            }
        },
    }
