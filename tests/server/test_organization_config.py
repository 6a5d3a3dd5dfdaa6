"""Shared organization configuration (OrganizationConfigService) through the real server, on
both backends: RBAC, limits, etags and the concurrent-write race, audit rows, cascade."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import config_service_pb2, config_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.config import ConfigError, Settings
from luman.server.db.models import AuditEvent, Organization
from luman.server.db.models import OrganizationConfig as ConfigModel
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    Account,
    add_member,
    create_organization,
    error_of,
    sign_up,
)
from tests.support import FakeClock, rich_error

Configs = config_service_pb2_grpc.OrganizationConfigServiceStub
SERVICE = config_service_pb2.DESCRIPTOR.services_by_name["OrganizationConfigService"]

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# Who may do what: the RBAC table of this service. Every RPC of the service has a row.
RBAC: dict[str, dict[str, grpc.StatusCode]] = {
    "GetOrganizationConfig": {"owner": OK, "admin": OK, "member": OK, "non-member": NOT_FOUND},
    "UpdateOrganizationConfig": {
        "owner": OK,
        "admin": OK,
        "member": DENIED,
        "non-member": NOT_FOUND,
    },
}


@pytest.fixture
def configs(channel: grpc.Channel) -> Configs:
    return config_service_pb2_grpc.OrganizationConfigServiceStub(channel)


class Team:
    """An organization with an owner, an admin, a member, and a stranger (no member)."""

    def __init__(
        self, auth: auth_service_pb2_grpc.AuthServiceStub, orgs: org_grpc.OrganizationServiceStub
    ) -> None:
        self.owner = sign_up(auth, "owner")
        self.organization = create_organization(orgs, self.owner)
        self.admin = sign_up(auth, "admin")
        self.member = sign_up(auth, "member")
        self.stranger = sign_up(auth, "stranger")
        add_member(orgs, self.owner, self.organization, self.admin, ADMIN)
        add_member(orgs, self.owner, self.organization, self.member, MEMBER)
        self.by_role = {
            "owner": self.owner,
            "admin": self.admin,
            "member": self.member,
            "non-member": self.stranger,
        }


@pytest.fixture
def team(
    auth: auth_service_pb2_grpc.AuthServiceStub, orgs: org_grpc.OrganizationServiceStub
) -> Team:
    return Team(auth, orgs)


def _struct(document: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(document)
    return struct


def get(configs: Configs, caller: Account, slug: str) -> config_service_pb2.OrganizationConfig:
    response = configs.GetOrganizationConfig(
        config_service_pb2.GetOrganizationConfigRequest(slug=slug), metadata=caller.metadata
    )
    return response.organization_config


def put(
    configs: Configs, caller: Account, slug: str, document: dict[str, Any], etag: str = ""
) -> config_service_pb2.OrganizationConfig:
    response = configs.UpdateOrganizationConfig(
        config_service_pb2.UpdateOrganizationConfigRequest(
            slug=slug, config=_struct(document), etag=etag
        ),
        metadata=caller.metadata,
    )
    return response.organization_config


def _as_dict(config: config_service_pb2.OrganizationConfig) -> dict[str, Any]:
    return json_format.MessageToDict(config.config)


def _error_metadata(call: Any) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return {"reason": info.reason, **info.metadata}
    raise AssertionError("no ErrorInfo")


def _audit_rows(sessions: Sessions, organization_id: str) -> list[AuditEvent]:
    """The config_updated events of the organization, by the version they record."""
    with sessions.read() as session:
        rows = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.organization_id == uuid.UUID(organization_id))
            .where(AuditEvent.action == "organization.config_updated")
        )
        return sorted(rows, key=lambda row: int(json.loads(row.details)["version"]))


# --- The RBAC table -------------------------------------------------------------------------


def test_rbac_table_covers_every_rpc_of_the_service() -> None:
    assert set(RBAC) == {method.name for method in SERVICE.methods}
    assert all(set(row) == {"owner", "admin", "member", "non-member"} for row in RBAC.values())


MATRIX = [
    pytest.param(rpc, caller, expected, id=f"{rpc}-{caller}")
    for rpc, row in RBAC.items()
    for caller, expected in row.items()
]


@pytest.mark.parametrize(("rpc", "caller_kind", "expected"), MATRIX)
def test_rbac_matrix(
    configs: Configs,
    team: Team,
    sessions: Sessions,
    rpc: str,
    caller_kind: str,
    expected: grpc.StatusCode,
) -> None:
    caller = team.by_role[caller_kind]
    slug = team.organization.slug
    put(configs, team.owner, slug, {"preset": "base"})

    def call() -> object:
        if rpc == "GetOrganizationConfig":
            return get(configs, caller, slug)
        return put(configs, caller, slug, {"preset": caller_kind})

    if expected is OK:
        call()
    else:
        error = error_of(call)
        assert error.code == expected
        assert error.reason == (
            "PERMISSION_DENIED" if expected is DENIED else "ORGANIZATION_NOT_FOUND"
        )
    written = rpc == "UpdateOrganizationConfig" and expected is OK
    current = get(configs, team.owner, slug)
    assert _as_dict(current) == {"preset": caller_kind if written else "base"}
    assert current.version == (2 if written else 1)
    # An event exactly for each write that happened.
    assert len(_audit_rows(sessions, team.organization.id)) == current.version


# --- Reading and writing --------------------------------------------------------------------


def test_never_written_reads_as_version_zero(configs: Configs, team: Team) -> None:
    config = get(configs, team.member, team.organization.slug)
    assert (config.version, config.etag, _as_dict(config)) == (0, 'W/"0"', {})
    assert config.HasField("config")
    assert config.organization_id == team.organization.id
    assert not config.HasField("update_time")
    assert config.updated_by == ""


def test_writes_increment_the_version_and_members_read_them(
    configs: Configs, team: Team, clock: FakeClock
) -> None:
    slug = team.organization.slug
    document = {"sources": [{"name": "acme", "url": "https://ui.acme.dev"}], "n": 1, "x": 2.5}
    first = put(configs, team.owner, slug, document, etag='W/"0"')
    assert (first.version, first.etag, first.updated_by) == (1, 'W/"1"', team.owner.id)
    assert first.update_time.ToDatetime().replace(tzinfo=clock().tzinfo) == clock()
    assert _as_dict(first) == document

    clock.advance(seconds=5)
    second = put(configs, team.admin, slug, {"preset": "dark"}, etag=first.etag)
    assert (second.version, second.etag, second.updated_by) == (2, 'W/"2"', team.admin.id)

    read = get(configs, team.member, slug)
    assert read == second
    assert _as_dict(read) == {"preset": "dark"}
    # By id as well as by slug.
    by_id = configs.GetOrganizationConfig(
        config_service_pb2.GetOrganizationConfigRequest(organization_id=team.organization.id),
        metadata=team.member.metadata,
    )
    assert by_id.organization_config == second


def test_document_is_stored_as_canonical_json(
    configs: Configs, team: Team, sessions: Sessions
) -> None:
    put(configs, team.owner, team.organization.slug, {"b": [1, 2.5, None, True], "a": "é"})
    with sessions.read() as session:
        stored = session.scalar(sa.select(ConfigModel.document))
    assert stored == '{"a":"é","b":[1,2.5,null,true]}'


def test_write_without_etag_is_unconditional(configs: Configs, team: Team) -> None:
    slug = team.organization.slug
    put(configs, team.owner, slug, {"v": 1})
    put(configs, team.admin, slug, {"v": 2})
    latest = put(configs, team.owner, slug, {"v": 3})
    assert (latest.version, _as_dict(latest)) == (3, {"v": 3})


def test_stale_etag_is_aborted_with_the_current_etag(
    configs: Configs, team: Team, sessions: Sessions
) -> None:
    slug = team.organization.slug
    first = put(configs, team.owner, slug, {"v": 1}, etag='W/"0"')
    put(configs, team.admin, slug, {"v": 2}, etag=first.etag)
    for stale in (first.etag, 'W/"0"', "nonsense"):

        def stale_write(etag: str = stale) -> object:
            return put(configs, team.owner, slug, {"v": 9}, etag=etag)

        error = error_of(stale_write)
        assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
        info = _error_metadata(stale_write)
        assert info == {"reason": "ETAG_MISMATCH", "etag": 'W/"2"'}
    assert _as_dict(get(configs, team.owner, slug)) == {"v": 2}
    assert len(_audit_rows(sessions, team.organization.id)) == 2


def test_concurrent_updates_with_one_etag_exactly_one_wins(configs: Configs, team: Team) -> None:
    slug = team.organization.slug
    base = put(configs, team.owner, slug, {"v": 0})
    writers = 8
    barrier = threading.Barrier(writers)
    outcomes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        caller = team.owner if i % 2 else team.admin
        barrier.wait()
        try:
            put(configs, caller, slug, {"v": i + 1}, etag=base.etag)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = rich_error(exc).code
        with lock:
            outcomes.append(code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes, key=str) == sorted(
        [grpc.StatusCode.OK] + [grpc.StatusCode.ABORTED] * (writers - 1), key=str
    )
    assert get(configs, team.owner, slug).version == 2


# --- Limits ---------------------------------------------------------------------------------


def test_size_limit_counts_canonical_json_bytes(configs: Configs, team: Team) -> None:
    slug = team.organization.slug
    overhead = len('{"a":""}')
    limit = 32768  # ORGANIZATION_CONFIG_MAX_BYTES' default
    fits = put(configs, team.owner, slug, {"a": "x" * (limit - overhead)})
    assert fits.version == 1
    error = error_of(lambda: put(configs, team.owner, slug, {"a": "x" * (limit - overhead + 1)}))
    assert (error.code, list(error.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["config"],
    )
    # Two-byte characters count as two.
    error = error_of(lambda: put(configs, team.owner, slug, {"a": "é" * (limit // 2)}))
    assert list(error.field_violations) == ["config"]
    assert get(configs, team.owner, slug).version == 1


def _nested(depth: int) -> dict[str, Any]:
    """An object nesting objects and lists, alternately, `depth` levels deep in all."""
    value: Any = {} if depth % 2 else []
    for level in range(depth - 1, 0, -1):
        value = {"k": value} if level % 2 else [value]
    assert isinstance(value, dict)
    return value


def _depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth_of(v) for v in value), default=0)
    return 0


def test_depth_limit(configs: Configs, team: Team, sessions: Sessions) -> None:
    slug = team.organization.slug
    assert _depth_of(_nested(32)) == 32
    assert put(configs, team.owner, slug, _nested(32)).version == 1
    error = error_of(lambda: put(configs, team.owner, slug, _nested(33)))
    assert (error.code, list(error.field_violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["config"],
    )
    assert len(_audit_rows(sessions, team.organization.id)) == 1


def test_missing_config_and_bad_numbers_are_invalid(configs: Configs, team: Team) -> None:
    slug = team.organization.slug
    missing = error_of(
        lambda: configs.UpdateOrganizationConfig(
            config_service_pb2.UpdateOrganizationConfigRequest(slug=slug),
            metadata=team.owner.metadata,
        )
    )
    assert list(missing.field_violations) == ["config"]
    nan = struct_pb2.Struct()
    nan.fields["x"].number_value = float("nan")
    bad = error_of(
        lambda: configs.UpdateOrganizationConfig(
            config_service_pb2.UpdateOrganizationConfigRequest(slug=slug, config=nan),
            metadata=team.owner.metadata,
        )
    )
    assert list(bad.field_violations) == ["config"]
    # {} is a document: it empties the configuration.
    assert put(configs, team.owner, slug, {}).version == 1


# --- Audit and lifecycle --------------------------------------------------------------------


def test_each_write_is_audited(configs: Configs, team: Team, sessions: Sessions) -> None:
    slug = team.organization.slug
    put(configs, team.owner, slug, {"a": 1})
    put(configs, team.admin, slug, {"a": "bb"})
    error_of(lambda: put(configs, team.member, slug, {"a": 3}))
    error_of(lambda: put(configs, team.stranger, slug, {"a": 3}))
    rows = _audit_rows(sessions, team.organization.id)
    assert [
        (r.actor_type, str(r.actor_id), r.target_type, r.target_id, json.loads(r.details))
        for r in rows
    ] == [
        (
            "user",
            team.owner.id,
            "organization_config",
            team.organization.id,
            {"version": 1, "bytes": len('{"a":1}')},
        ),
        (
            "user",
            team.admin.id,
            "organization_config",
            team.organization.id,
            {"version": 2, "bytes": len('{"a":"bb"}')},
        ),
    ]


def test_deleting_the_organization_deletes_its_config(
    configs: Configs, team: Team, sessions: Sessions
) -> None:
    put(configs, team.owner, team.organization.slug, {"a": 1})
    organization_id = uuid.UUID(team.organization.id)
    with sessions.write.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ConfigModel)) == 1
        session.execute(sa.delete(Organization).where(Organization.id == organization_id))
    with sessions.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ConfigModel)) == 0


# --- Configuration of the limit -------------------------------------------------------------


def test_max_bytes_setting(tmp_path: Path) -> None:
    base = {"LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).organization_config_max_bytes == 32768
    assert (
        Settings.from_env({**base, "ORGANIZATION_CONFIG_MAX_BYTES": "1000"})
    ).organization_config_max_bytes == 1000
    for bad in ("0", "x", "40000"):  # 40000: more than half of GRPC_MAX_MESSAGE_BYTES' 65536
        with pytest.raises(ConfigError, match="ORGANIZATION_CONFIG_MAX_BYTES"):
            Settings.from_env({**base, "ORGANIZATION_CONFIG_MAX_BYTES": bad})
    raised = Settings.from_env(
        {**base, "ORGANIZATION_CONFIG_MAX_BYTES": "40000", "GRPC_MAX_MESSAGE_BYTES": "131072"}
    )
    assert raised.organization_config_max_bytes == 40000
