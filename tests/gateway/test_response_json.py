"""The gateway writes responses exactly as json_format.MessageToDict would (transcode.py)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from luman.auth.v1 import auth_service_pb2
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.server.gateway.transcode import _message_json, omitted_when_empty

_RESPONSES = [
    descriptor._concrete_class
    for module in (auth_service_pb2, organization_service_pb2)
    for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
    if name.endswith("Response")
]
# Nanos with 0, 3, 6 and 9 digits: Timestamp JSON drops or shortens the fraction.
_NANOS = itertools.cycle([0, 456_000_000, 456_789_000, 456_789_123])


def _filled(message: Message, depth: int = 0) -> Message:
    """`message` with every field set (one member per oneof), lists of three."""
    chosen_oneofs: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in chosen_oneofs:
                continue
            chosen_oneofs.add(oneof.name)
        count = 3 if field.is_repeated else 1
        for i in range(count):
            _set(message, field, i, depth)
    return message


def _set(message: Message, field: Any, i: int, depth: int) -> None:
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        target = getattr(message, field.name).add() if field.is_repeated else None
        if target is None:
            target = getattr(message, field.name)
        if field.message_type.full_name == "google.protobuf.Timestamp":
            target.seconds = 1_765_000_000 + i * 86_399
            target.nanos = next(_NANOS)
        elif depth < 3:
            _filled(target, depth + 1)
        else:
            target.SetInParent()
        return
    value: Any
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        value = [1, 2, 0, 99][i]  # 99: a number the enum does not name
    elif field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        value = f'{field.name} {i} «ünïcode» "quoted"'
    elif field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        value = True
    else:
        value = 2**40 + i if field.cpp_type == FieldDescriptor.CPPTYPE_INT64 else 7 + i
    if field.is_repeated:
        getattr(message, field.name).append(value)
    else:
        setattr(message, field.name, value)


# The repeated fields the contract marks omit_empty, written out here rather than read from
# the code under test: the one place an inactive introspection answer must stay {"active": false}.
OMIT_EMPTY = {"IntrospectTokenResponse": {"scopes"}}


def test_the_omit_empty_fields_are_exactly_those_the_contract_marks() -> None:
    marked = {
        c.DESCRIPTOR.name: set(omitted_when_empty(c.DESCRIPTOR))
        for c in _RESPONSES
        if omitted_when_empty(c.DESCRIPTOR)
    }
    assert marked == OMIT_EMPTY


def _assert_same_json(message: Message) -> None:
    expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    # ...but for the repeated fields the contract marks omit_empty, absent when empty.
    for name in OMIT_EMPTY.get(message.DESCRIPTOR.name, set()):
        if expected.get(name) == []:
            del expected[name]
    written = _message_json(message)
    assert written == expected
    # Key order too: the bytes on the wire are the same.
    assert json.dumps(written, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)


@pytest.mark.parametrize("response_class", _RESPONSES, ids=lambda c: c.DESCRIPTOR.name)
def test_every_response_is_written_as_json_format_writes_it(response_class: type[Message]) -> None:
    _assert_same_json(response_class())
    _assert_same_json(_filled(response_class()))


def test_unset_fields_and_unknown_enum_numbers_are_written_as_json_format_writes_them() -> None:
    member = organization_pb2.Member(user_id="u", role=organization_pb2.ORGANIZATION_ROLE_ADMIN)
    response = organization_service_pb2.ListMembersResponse(members=[member])
    response.members.add(role=42)  # join_time unset, role unknown to this build
    _assert_same_json(response)


def _status_with_details() -> status_pb2.Status:
    status = status_pb2.Status(code=5, message="gone")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="GONE", domain="d"))
    return status


@pytest.mark.parametrize(
    "message",
    [
        _status_with_details(),
        error_details_pb2.ErrorInfo(reason="R", domain="d", metadata={"a": "1", "b": "2"}),
        struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=1.5)}),
    ],
    ids=["any", "map", "struct"],
)
def test_types_left_to_json_format_are_written_by_it(message: Message) -> None:
    _assert_same_json(message)


@pytest.mark.parametrize(
    "seconds",
    [
        -62_135_596_800,  # 0001-01-01T00:00:00Z, the first valid second
        -62_135_596_799,
        -1,
        0,
        951_782_400,  # 2000-02-29
        1_765_000_000,
        253_402_300_799,  # 9999-12-31T23:59:59Z, the last
    ],
)
@pytest.mark.parametrize("nanos", [0, 1, 999, 1_000, 120_000, 456_000_000, 999_999_999])
def test_timestamps_are_written_as_to_json_string_writes_them(seconds: int, nanos: int) -> None:
    response = organization_service_pb2.ListMembersResponse()
    response.members.add().join_time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    _assert_same_json(response)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (-62_135_596_801, 0),
        (253_402_300_800, 0),
        (10**12, 0),  # far past year 9999
        (0, -1),
        (0, 1_000_000_000),
    ],
)
def test_timestamps_out_of_range_fail_as_json_format_fails(seconds: int, nanos: int) -> None:
    response = organization_service_pb2.ListMembersResponse()
    response.members.add().join_time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(json_format.SerializeToJsonError) as expected:
        json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
    with pytest.raises(json_format.SerializeToJsonError) as written:
        _message_json(response)
    assert str(written.value) == str(expected.value)


def _out_of_order_message() -> type[Message]:
    """A proto3 message declaring its fields out of field-number order (none of the contract's
    does): MessageToDict writes the set ones by number, then the unset ones as declared."""
    file = descriptor_pb2.FileDescriptorProto(
        name="shuffled.proto", package="test.shuffled", syntax="proto3"
    )
    message = file.message_type.add(name="Shuffled")
    field = descriptor_pb2.FieldDescriptorProto
    for name, number, kind, label in [
        ("zeta", 4, field.TYPE_STRING, field.LABEL_OPTIONAL),
        ("alpha", 2, field.TYPE_INT32, field.LABEL_OPTIONAL),
        ("mu", 3, field.TYPE_STRING, field.LABEL_REPEATED),
        ("beta", 1, field.TYPE_BOOL, field.LABEL_OPTIONAL),
    ]:
        message.field.add(name=name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.shuffled.Shuffled"))


@pytest.mark.parametrize(
    "values",
    [{}, {"zeta": "z"}, {"alpha": 7, "mu": ["m"]}, {"zeta": "z", "beta": True}],
    ids=["none-set", "last-set", "middle-set", "ends-set"],
)
def test_unset_fields_follow_in_declaration_order(values: dict[str, Any]) -> None:
    _assert_same_json(_out_of_order_message()(**values))
