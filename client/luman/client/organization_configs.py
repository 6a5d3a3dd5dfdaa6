"""An organization's shared configuration (luman.organization.v1.OrganizationConfigService):
`client.organization_configs.get("acme")`, `.update("acme", {...}, etag=...)`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from luman.client.auth_store import config_dir, write_atomically
from luman.client.errors import InvalidArgument
from luman.organization.v1 import config_service_pb2, config_service_pb2_grpc

if TYPE_CHECKING:
    from luman.client.client import Client

_EXACT_INTEGER = 2**53  # doubles hold every integer up to this one exactly


def _plain(value: struct_pb2.Value) -> Any:
    """A Struct Value as plain JSON data; whole numbers come back as int, as they were sent."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: _plain(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _EXACT_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


@dataclasses.dataclass(frozen=True)
class OrganizationConfig:
    """An organization's shared configuration. Never written: version 0, `config` empty.

    `etag` identifies the version (W/"<version>"); pass it to `update` to make the update fail
    with Aborted if someone else wrote in between.
    """

    organization_id: str
    config: dict[str, Any]
    version: int
    etag: str
    update_time: dt.datetime | None
    updated_by: str  # the writer's user id; "" when never written

    @classmethod
    def from_proto(cls, message: config_service_pb2.OrganizationConfig) -> OrganizationConfig:
        return cls(
            organization_id=message.organization_id,
            config={key: _plain(item) for key, item in message.config.fields.items()},
            version=message.version,
            etag=message.etag,
            update_time=(
                message.update_time.ToDatetime(tzinfo=dt.UTC)
                if message.HasField("update_time")
                else None
            ),
            updated_by=message.updated_by,
        )


def _struct(config: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    try:
        struct.update(config)
    except (TypeError, ValueError) as exc:
        message = f"config is not JSON data: {exc}"
        raise InvalidArgument(message, code=None, field_violations={"config": message}) from None
    return struct


class OrganizationConfigsAPI:
    """Shared organization configurations: members read, owners and admins write."""

    def __init__(
        self, client: Client, stub: config_service_pb2_grpc.OrganizationConfigServiceStub
    ) -> None:
        self._client = client
        self._stub = stub

    def get(self, organization: str | uuid.UUID) -> OrganizationConfig:
        """The configuration of an organization (a str is its slug, a UUID its id).

        Raises:
            NotFound: ORGANIZATION_NOT_FOUND (also when the caller is not a member).
        """
        request = config_service_pb2.GetOrganizationConfigRequest()
        if isinstance(organization, uuid.UUID):
            request.organization_id = str(organization)
        else:
            request.slug = organization
        response = self._client.call(self._stub.GetOrganizationConfig, request)
        return OrganizationConfig.from_proto(response.organization_config)

    def update(
        self, organization: str | uuid.UUID, config: Mapping[str, Any], *, etag: str = ""
    ) -> OrganizationConfig:
        """Replace the configuration with `config` (a JSON object) and return the new version.
        With `etag`, only if it is still the current one; without, unconditionally.

        Raises:
            InvalidArgument: `config` is not JSON data, too large or too deeply nested.
            PermissionDenied: the caller is a member, not an owner or admin.
            NotFound: ORGANIZATION_NOT_FOUND.
            Aborted: ETAG_MISMATCH; `metadata["etag"]` is the current etag.
        """
        request = config_service_pb2.UpdateOrganizationConfigRequest(
            config=_struct(config), etag=etag
        )
        if isinstance(organization, uuid.UUID):
            request.organization_id = str(organization)
        else:
            request.slug = organization
        response = self._client.call(self._stub.UpdateOrganizationConfig, request)
        return OrganizationConfig.from_proto(response.organization_config)


# --- The pulled copy ------------------------------------------------------------------------
#
# `luman org config pull SLUG` keeps the configuration where the CLI reads it:
#   <config dir>/orgs/SLUG/config.json   the document (sorted keys, 2-space indent)
#   <config dir>/orgs/SLUG/pull.json     {"etag", "version", "organization_id", "pull_time"}
# where <config dir> is $LUMAN_CONFIG_DIR or ~/.luman (auth_store.config_dir). pull.json is the
# version the local copy is based on: `luman org config set SLUG` sends its etag.

ORGS_DIR_NAME = "orgs"
CONFIG_FILE_NAME = "config.json"
PULL_FILE_NAME = "pull.json"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class PulledConfig:
    """Where a pulled configuration is, and the version it was."""

    path: Path  # config.json
    etag: str
    version: int
    organization_id: str


def pulled_config_dir(slug: str, directory: Path | None = None) -> Path:
    """<config dir>/orgs/SLUG.

    Raises:
        ValueError: `slug` is not an organization slug (it must not reach a file path).
    """
    if not _SLUG.fullmatch(slug):
        raise ValueError(f"{slug!r} is not an organization slug")
    return (directory or config_dir()) / ORGS_DIR_NAME / slug


def save_pulled(
    slug: str, config: OrganizationConfig, directory: Path | None = None
) -> PulledConfig:
    """Write `config` as the pulled copy of SLUG: config.json, then pull.json.

    Raises:
        ValueError: a bad slug.
        OSError: the files cannot be written.
    """
    folder = pulled_config_dir(slug, directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / CONFIG_FILE_NAME
    write_atomically(
        path, json.dumps(config.config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    meta = {
        "etag": config.etag,
        "version": config.version,
        "organization_id": config.organization_id,
        "pull_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    write_atomically(folder / PULL_FILE_NAME, json.dumps(meta, indent=2) + "\n")
    return PulledConfig(path, config.etag, config.version, config.organization_id)


def load_pulled(slug: str, directory: Path | None = None) -> PulledConfig | None:
    """The pulled copy of SLUG, or None when there is none (or its pull.json is unreadable)."""
    folder = pulled_config_dir(slug, directory)
    try:
        meta = json.loads((folder / PULL_FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    etag, version = meta.get("etag"), meta.get("version")
    if not isinstance(etag, str) or not etag or not isinstance(version, int):
        return None
    organization_id = meta.get("organization_id")
    return PulledConfig(
        folder / CONFIG_FILE_NAME,
        etag,
        version,
        organization_id if isinstance(organization_id, str) else "",
    )
