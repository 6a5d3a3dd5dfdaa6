"""Proto comments by element name, for the descriptions in /openapi.json.

The generated `_pb2` modules embed descriptors without their source info, so the comments are
not there at run time. `make proto` therefore also writes `luman/api/v1/descriptors.binpb`
(protoc --include_source_info) next to the generated code, and this module reads it. A missing
or unreadable file only costs the descriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from luman.api.v1 import annotations_pb2

logger = logging.getLogger(__name__)

DESCRIPTOR_SET = Path(annotations_pb2.__file__).with_name("descriptors.binpb")

# Field numbers of FileDescriptorProto / DescriptorProto / … that SourceCodeInfo paths use.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        logger.warning("no proto comments for /openapi.json: cannot read %s: %s", path, exc)
        return descriptor_pb2.FileDescriptorSet()


def comments_by_name(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments keyed by full name: "luman.auth.v1.User", "luman.auth.v1.User.email",
    "luman.auth.v1.AuthService.Login", "luman.organization.v1.OrganizationRole.…_OWNER"."""
    result: dict[str, str] = {}
    for file in files.file:
        by_path = {
            tuple(location.path): _clean(location.leading_comments)
            for location in file.source_code_info.location
            if location.leading_comments
        }
        package = f"{file.package}." if file.package else ""
        for index, message in enumerate(file.message_type):
            _message(result, by_path, (_FILE_MESSAGE, index), package + message.name, message)
        for index, enum in enumerate(file.enum_type):
            _enum(result, by_path, (_FILE_ENUM, index), package, enum)
        for index, service in enumerate(file.service):
            path = (_FILE_SERVICE, index)
            name = package + service.name
            _put(result, by_path, path, name)
            for method_index, method in enumerate(service.method):
                _put(
                    result, by_path, (*path, _SERVICE_METHOD, method_index), f"{name}.{method.name}"
                )
    return result


def _put(
    result: dict[str, str], by_path: Mapping[tuple[int, ...], str], path: tuple[int, ...], name: str
) -> None:
    comment = by_path.get(path)
    if comment:
        result[name] = comment


def _message(
    result: dict[str, str],
    by_path: Mapping[tuple[int, ...], str],
    path: tuple[int, ...],
    name: str,
    message: descriptor_pb2.DescriptorProto,
) -> None:
    _put(result, by_path, path, name)
    for index, field in enumerate(message.field):
        _put(result, by_path, (*path, _MESSAGE_FIELD, index), f"{name}.{field.name}")
    for index, oneof in enumerate(message.oneof_decl):
        _put(result, by_path, (*path, _MESSAGE_ONEOF, index), f"{name}.{oneof.name}")
    for index, nested in enumerate(message.nested_type):
        _message(result, by_path, (*path, _MESSAGE_NESTED, index), f"{name}.{nested.name}", nested)
    for index, enum in enumerate(message.enum_type):
        _enum(result, by_path, (*path, _MESSAGE_ENUM, index), f"{name}.", enum)


def _enum(
    result: dict[str, str],
    by_path: Mapping[tuple[int, ...], str],
    path: tuple[int, ...],
    scope: str,
    enum: descriptor_pb2.EnumDescriptorProto,
) -> None:
    _put(result, by_path, path, scope + enum.name)
    for index, value in enumerate(enum.value):
        # Enum values are scoped like siblings of their enum, as in protobuf itself; keep the
        # enum in the key so that two enums' values never collide here.
        _put(result, by_path, (*path, _ENUM_VALUE, index), f"{scope}{enum.name}.{value.name}")


def _clean(comment: str) -> str:
    """Strip the single space protoc leaves after `//` and the trailing newline."""
    lines = [line[1:] if line.startswith(" ") else line for line in comment.split("\n")]
    return "\n".join(lines).strip()
