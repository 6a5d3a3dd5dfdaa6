"""HTTP request -> request message, response message -> JSON, as grpc-gateway binds them.

Binding: path variables set their fields; with `body: "*"` the JSON body is the rest of the
request message; otherwise the named field (if any) comes from the body and every other field
may come from the query string (`?page_size=10` or `?pageSize=10`; repeat a parameter for a
repeated field; dotted names reach into nested messages).

JSON mapping (protobuf's canonical proto3 JSON, google.protobuf.json_format):
- Responses use lowerCamelCase json names (grpc-gateway's default; what a JavaScript client
  expects). Requests accept the json name or the proto name.
- Responses always contain the fields that have no presence, at their default values ("",
  0, false, [], the zero enum name), so a client can rely on every key being there; message
  fields, oneof members and `optional` fields appear only when set, and so does a repeated
  field marked `(luman.api.v1.omit_empty)` (left out when empty). openapi.py marks exactly
  the always-written ones as required.
- Enums are written as names; int64 values as strings; Timestamps as RFC 3339 strings.
- Strict input: an unknown field, a field given twice (by either name), a field the URL path
  already sets, a non-object body, duplicate JSON keys, NaN/Infinity, or a value of the wrong
  type is a 400 with a google.rpc.BadRequest naming the field.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from luman.api.v1 import annotations_pb2
from luman.server.gateway.routes import Route, RouteMatch
from luman.server.gateway.status import bad_request

# Well-known types whose JSON form is a single string or number, so a query parameter or a path
# variable can carry them.
_STRING_WKTS = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_WRAPPER_WKTS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Well-known types with a special JSON form (checked by json_format, not by key walking).
_OPAQUE_WKTS = (
    _STRING_WKTS
    | _WRAPPER_WKTS
    | {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
    }
)
_TRUE = frozenset({"true", "True", "TRUE", "t", "T", "1"})
_FALSE = frozenset({"false", "False", "FALSE", "f", "F", "0"})
_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")
MAX_JSON_DEPTH = 32


def build_request(match: RouteMatch, query: Sequence[tuple[str, str]], body: bytes) -> Message:
    """The request message for this call.

    Raises:
        GatewayError: a 400 describing what is wrong with the input.
    """
    route = match.route
    descriptor = route.method.input_type
    bound = route.bound_fields()
    document: dict[str, Any] = {}
    if route.body == "*":
        document = _body_object(body, descriptor, bound)
    elif route.body and body.strip():
        document[route.body] = _load_json(body)
    if query:
        if route.body == "*":
            name = query[0][0]
            raise bad_request(
                "UNKNOWN_QUERY_PARAMETER",
                f"this endpoint takes its fields from the JSON body, not the query ({name!r})",
                field=name,
            )
        _bind_query(document, descriptor, query, bound | {route.body})
    for variable, value in match.path_values.items():
        fields = _walk(descriptor, variable.field_path)
        assert fields is not None  # checked when the route table was built
        _put(document, variable.field_path, _convert(fields[-1], value, variable.name))
    message = route.request_class()
    try:
        json_format.ParseDict(
            document, message, ignore_unknown_fields=False, max_recursion_depth=MAX_JSON_DEPTH
        )
    except json_format.ParseError as exc:
        text = str(exc).split("\n", 1)[0]
        found = _PARSE_FIELD.search(text)
        raise bad_request(
            "INVALID_FIELD_VALUE", text, field=found.group(1) if found else None
        ) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise bad_request("INVALID_FIELD_VALUE", f"invalid request: {type(exc).__name__}") from None
    return message


def response_json(route: Route, message: Message) -> bytes:
    document: Any = _message_json(message)
    if route.response_body:
        field = route.method.output_type.fields_by_name[route.response_body]
        document = document.get(field.json_name)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


# Responses are written as json_format.MessageToDict(message,
# always_print_fields_with_no_presence=True) writes them, key order included, but from a plan
# made once per message type. MessageToDict works out how to write every field of every message
# on each call: for a 50-member ListMembers response 4.3M instructions (590 µs), more than the
# gRPC call itself (3.0M on SQLite). A type the plan does not cover (maps, bytes, floating
# point, closed enums or enum values with options, extensions, well-known types other than
# Timestamp, Duration and FieldMask) is written by MessageToDict itself.
# tests/gateway/test_response_json.py holds the two to the same output.
#
# Each field is read by name rather than through ListFields(), and Timestamps are written here
# rather than by ToJsonString(): a 50-member page took 231 µs the old way and takes 162 µs so
# (best of 7 x 2,000, alternating, this machine, 2026-12-07; a Timestamp 2.09 against 1.46 µs),
# about 7 % of a `GET /organizations/{slug}/members` of 50 (BENCHMARKS.md, "HTTP list pages").

_Write = Callable[[Any], Any]
# Well-known types whose JSON is their ToJsonString(), which is what json_format calls.
_JSON_STRING_WKTS = frozenset({"google.protobuf.Duration", "google.protobuf.FieldMask"})
_AS_IS = frozenset(
    {
        FieldDescriptor.CPPTYPE_STRING,
        FieldDescriptor.CPPTYPE_BOOL,
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_UINT32,
    }
)
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
# How a field's presence is told, which decides where MessageToDict writes it.
_PLAIN = 0  # no presence: set when not its default; unset ones are written after the set ones
_OPTIONAL = 1  # presence (message fields, oneof members, `optional`): left out when unset
_REPEATED = 2  # set when not empty; an empty one is written as [] after the set ones
_EPOCH = datetime.datetime(1970, 1, 1)
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 to 9999-12-31


class _LeftToJsonFormatError(Exception):
    """The message type is left to json_format."""


class _FieldPlan(NamedTuple):
    attribute: str  # the field's proto name: getattr(), HasField()
    name: str  # its JSON name
    presence: int  # _PLAIN, _OPTIONAL or _REPEATED
    write: _Write | None  # None: the value is its own JSON
    default: Any  # _PLAIN: the value that means unset
    # Where an unset _PLAIN or _REPEATED field goes among the unset ones (declaration order),
    # or -1: left out (an unset _OPTIONAL field, or a repeated field marked omit_empty).
    unset_position: int
    unset_json: Any  # _PLAIN: the default's JSON (never None); _REPEATED: None, written as []


class _MessagePlan(NamedTuple):
    fields: tuple[_FieldPlan, ...]  # in field-number order, as ListFields() lists set fields
    sort_unset: bool  # declaration order differs from field-number order


def _message_json(message: Message) -> Any:
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        for name in omitted_when_empty(message.DESCRIPTOR):
            if printed.get(name) == []:
                del printed[name]
        return printed
    document: dict[str, Any] = {}
    unset: list[tuple[int, str, Any]] = []
    attribute = ""
    try:
        for attribute, name, presence, write, default, position, unset_json in plan.fields:
            if presence == _PLAIN:
                value = getattr(message, attribute)
                if value == default:
                    unset.append((position, name, unset_json))
                else:
                    document[name] = value if write is None else write(value)
            elif presence == _OPTIONAL:
                if message.HasField(attribute):
                    value = getattr(message, attribute)
                    document[name] = value if write is None else write(value)
            else:
                values = getattr(message, attribute)
                if values:
                    document[name] = list(values) if write is None else [write(v) for v in values]
                elif position >= 0:
                    unset.append((position, name, None))
    except ValueError as exc:  # worded as json_format words it
        raise json_format.SerializeToJsonError(
            f"Failed to serialize {attribute} field: {exc}."
        ) from exc
    if plan.sort_unset:
        unset.sort()
    for _, name, unset_json in unset:
        document[name] = [] if unset_json is None else unset_json
    return document


@functools.cache
def _plan(descriptor: Descriptor) -> _MessagePlan | None:
    if (
        descriptor.full_name.startswith("google.protobuf.")
        or descriptor.extension_ranges
        or descriptor.GetOptions().map_entry
    ):
        return None
    fields: list[tuple[int, _FieldPlan]] = []  # (field number, plan), in declaration order
    try:
        for position, field in enumerate(descriptor.fields):
            write = _writer(field)
            if field.is_repeated:
                at = -1 if omits_empty(field) else position
                plan = _FieldPlan(field.name, field.json_name, _REPEATED, write, None, at, None)
            elif field.has_presence:
                plan = _FieldPlan(field.name, field.json_name, _OPTIONAL, write, None, -1, None)
            else:
                default = field.default_value
                unset_json = default if write is None else write(default)
                plan = _FieldPlan(
                    field.name, field.json_name, _PLAIN, write, default, position, unset_json
                )
            fields.append((field.number, plan))
    except _LeftToJsonFormatError:
        return None
    by_number = sorted(fields, key=lambda numbered: numbered[0])
    return _MessagePlan(tuple(plan for _, plan in by_number), by_number != fields)


def omits_empty(field: FieldDescriptor) -> bool:
    """Whether a response leaves this repeated field out when empty (luman.api.v1.omit_empty)."""
    return field.is_repeated and field.GetOptions().Extensions[annotations_pb2.omit_empty]


@functools.cache
def omitted_when_empty(descriptor: Descriptor) -> frozenset[str]:
    """The JSON names of the message's omit_empty fields."""
    return frozenset(field.json_name for field in descriptor.fields if omits_empty(field))


def _writer(field: FieldDescriptor) -> _Write | None:
    """How one value of `field` becomes JSON, as json_format._Printer._FieldToJsonObject does it.

    Raises:
        _LeftToJsonFormatError: for a field the plans leave to json_format.
    """
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        message_type = field.message_type
        assert message_type is not None
        if message_type.GetOptions().map_entry:
            raise _LeftToJsonFormatError
        if message_type.full_name == "google.protobuf.Timestamp":
            return _timestamp_json
        if message_type.full_name in _JSON_STRING_WKTS:
            return _to_json_string
        return _message_json
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum_type = field.enum_type
        assert enum_type is not None
        if enum_type.is_closed or any(value.has_options for value in enum_type.values):
            raise _LeftToJsonFormatError  # json_format's errors and json_name options stay its own
        if enum_type.full_name == "google.protobuf.NullValue":
            raise _LeftToJsonFormatError
        names = {number: value.name for number, value in enum_type.values_by_number.items()}
        # An open enum's unknown number is written as the number.
        return lambda number: names.get(number, number)
    if kind in _INT64:
        return str
    if kind in _AS_IS and field.type != FieldDescriptor.TYPE_BYTES:
        return None
    raise _LeftToJsonFormatError  # bytes (base64), float and double (NaN, Infinity, float32 digits)


def _to_json_string(message: Any) -> Any:
    return message.ToJsonString()


def _timestamp_json(timestamp: Any) -> str:
    """Timestamp.ToJsonString(), written the way it writes it: Z-normalized, with 0, 3, 6 or 9
    fractional digits."""
    seconds, nanos = timestamp.seconds, timestamp.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        return str(timestamp.ToJsonString())  # raises ValueError, worded as json_format words it
    text = (_EPOCH + datetime.timedelta(0, seconds)).isoformat()
    if nanos == 0:
        return text + "Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{text}.{nanos // 1_000:06d}Z"
    return f"{text}.{nanos:09d}Z"


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("INVALID_JSON", "the request body is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except _DuplicateKeyError as exc:
        raise bad_request(
            "DUPLICATE_FIELD", f"key {exc.key!r} appears twice", field=exc.key
        ) from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            "INVALID_JSON", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        # ValueError: NaN/Infinity, or an integer longer than Python converts.
        raise bad_request("INVALID_JSON", f"malformed JSON: {exc}"[:200]) from None


def _body_object(body: bytes, descriptor: Descriptor, bound: frozenset[str]) -> dict[str, Any]:
    # An empty body is the empty message, as in grpc-gateway: `curl -X POST` needs no `-d {}`.
    if not body.strip():
        return {}
    document = _load_json(body)
    if not isinstance(document, dict):
        raise bad_request("INVALID_JSON", "the request body must be a JSON object")
    _check_keys(document, descriptor, "", bound, depth=0)
    return document


def _field_for_key(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(key)
    if field is not None:
        return field
    for candidate in descriptor.fields:
        if candidate.json_name == key:
            return candidate
    return None


def _check_keys(
    document: dict[str, Any],
    descriptor: Descriptor,
    prefix: str,
    bound: frozenset[str],
    depth: int,
) -> None:
    """Reject unknown keys, a field given under both its names, and fields the path sets."""
    if depth > MAX_JSON_DEPTH:
        raise bad_request("INVALID_JSON", "the request body is nested too deeply")
    seen: set[str] = set()
    for key, value in document.items():
        where = prefix + key
        field = _field_for_key(descriptor, key)
        if field is None:
            raise bad_request("UNKNOWN_FIELD", f"unknown field {key!r}", field=where)
        if field.name in seen:
            raise bad_request("DUPLICATE_FIELD", f"field {key!r} is given twice", field=where)
        seen.add(field.name)
        if field.name in bound:
            raise bad_request(
                "FIELD_SET_BY_PATH", f"field {key!r} is set by the URL path", field=where
            )
        nested = field.message_type
        if nested is None or nested.full_name in _OPAQUE_WKTS:
            continue
        if nested.GetOptions().map_entry:
            value_type = nested.fields_by_name["value"].message_type
            if (
                isinstance(value, dict)
                and value_type is not None
                and value_type.full_name not in _OPAQUE_WKTS
            ):
                for map_key, item in value.items():
                    if isinstance(item, dict):
                        path = f"{where}[{map_key!r}]."
                        _check_keys(item, value_type, path, frozenset(), depth + 1)
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, dict):
                path = f"{where}[{index}]." if isinstance(value, list) else f"{where}."
                _check_keys(item, nested, path, frozenset(), depth + 1)


def _walk(descriptor: Descriptor, names: Sequence[str]) -> list[FieldDescriptor] | None:
    """Resolve a dotted field path (proto or json names); None if a part does not exist."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in names:
        if current is None:
            return None
        field = _field_for_key(current, name)
        if field is None:
            return None
        fields.append(field)
        current = field.message_type
    return fields


def _bind_query(
    document: dict[str, Any],
    descriptor: Descriptor,
    query: Sequence[tuple[str, str]],
    excluded: frozenset[str] | set[str],
) -> None:
    grouped: dict[tuple[str, ...], tuple[str, list[FieldDescriptor], list[str]]] = {}
    for name, value in query:
        fields = _walk(descriptor, name.split(".")) if name else None
        if fields is None:
            raise bad_request(
                "UNKNOWN_QUERY_PARAMETER", f"unknown query parameter {name!r}", field=name
            )
        if fields[0].name in excluded:
            raise bad_request(
                "FIELD_SET_BY_PATH",
                f"query parameter {name!r} names a field set by the path or the body",
                field=name,
            )
        for parent in fields[:-1]:
            if parent.is_repeated:
                raise bad_request(
                    "UNSUPPORTED_QUERY_PARAMETER",
                    f"query parameter {name!r} walks through a repeated field",
                    field=name,
                )
        leaf = fields[-1]
        leaf_type = leaf.message_type
        if leaf_type is not None and (
            leaf_type.GetOptions().map_entry
            or leaf_type.full_name not in _STRING_WKTS | _WRAPPER_WKTS
        ):
            raise bad_request(
                "UNSUPPORTED_QUERY_PARAMETER",
                f"query parameter {name!r} names a message; use dotted names for its fields",
                field=name,
            )
        key = tuple(f.name for f in fields)
        grouped.setdefault(key, (name, fields, []))[2].append(value)
    for key, (name, fields, values) in grouped.items():
        leaf = fields[-1]
        if leaf.is_repeated:
            _put(document, key, [_convert(leaf, v, name) for v in values])
            continue
        if len(values) > 1:
            raise bad_request(
                "REPEATED_QUERY_PARAMETER", f"query parameter {name!r} is given twice", field=name
            )
        _put(document, key, _convert(leaf, values[0], name))


def _put(document: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for name in path[:-1]:
        child = document.setdefault(name, {})
        if not isinstance(child, dict):
            raise bad_request("INVALID_FIELD_VALUE", f"{name!r} is not an object", field=name)
        document = child
    document[path[-1]] = value


def _convert(field: FieldDescriptor, raw: str, name: str) -> Any:
    """A query or path string as the JSON value json_format expects for `field`."""
    message_type = field.message_type
    if message_type is not None:
        if message_type.full_name in _WRAPPER_WKTS:
            return _convert(message_type.fields_by_name["value"], raw, name)
        return raw  # Timestamp, Duration, FieldMask: their JSON form is a string
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise bad_request("INVALID_FIELD_VALUE", f"{name!r} must be true or false", field=name)
    if field.type == FieldDescriptor.TYPE_ENUM and raw.lstrip("-").isdigit():
        return int(raw)
    # Numbers stay strings: the proto3 JSON mapping accepts "10" and json_format range-checks it.
    return raw
