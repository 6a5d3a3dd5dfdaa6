"""UpdateOrganization, DeleteOrganization and the ownership transfer through the real stack,
with the audit events each one writes (and none when it is refused)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import (
    AuditEvent,
    Membership,
    OrganizationSlugRedirect,
    OwnershipOffer,
    ServiceAccount,
)
from luman.server.db.session import Sessions
from tests.server.organization_support import (
    ADMIN,
    MEMBER,
    OWNER,
    Account,
    add_member,
    create_organization,
    error_of,
    roles_by_user,
    sign_up,
    unique_slug,
)
from tests.support import PASSWORD, FakeClock, rich_error

Orgs = organization_service_pb2_grpc.OrganizationServiceStub
Auth = auth_service_pb2_grpc.AuthServiceStub

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def events(sessions: Sessions, organization_id: str, action: str | None = None) -> list[AuditEvent]:
    """The organization's audit events, oldest first, read through the app's sessions."""
    statement = sa.select(AuditEvent).where(
        AuditEvent.organization_id == uuid.UUID(organization_id)
    )
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    with sessions.read() as session:
        return list(session.scalars(statement.order_by(AuditEvent.time, AuditEvent.action)))


def admin_events(sessions: Sessions, organization_id: str) -> list[str]:
    """The actions of this feature's events (membership events of the setup left out), sorted:
    the fake clock gives events of one test the same time."""
    return sorted(
        e.action
        for e in events(sessions, organization_id)
        if e.action.startswith(("organization.renamed", "organization.slug", "organization.del"))
        or e.action.startswith("ownership.")
    )


def signed_in_again(auth: Auth, account: Account) -> Account:
    """The account with a fresh access token (after the fake clock jumped past its expiry)."""
    response = auth.Login(auth_service_pb2.LoginRequest(email=account.email, password=PASSWORD))
    return dataclasses.replace(account, token=response.tokens.access_token)


def rename(
    orgs: Orgs, caller: Account, slug: str, *, name: str = "", new_slug: str = ""
) -> organization_pb2.Organization:
    paths = [p for p, v in (("name", name), ("slug", new_slug)) if v]
    response = orgs.UpdateOrganization(
        pb.UpdateOrganizationRequest(
            slug=slug,
            organization=organization_pb2.Organization(name=name, slug=new_slug),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        metadata=caller.metadata,
    )
    return response.organization


def get(orgs: Orgs, caller: Account, slug: str) -> organization_pb2.Organization:
    response = orgs.GetOrganization(pb.GetOrganizationRequest(slug=slug), metadata=caller.metadata)
    return response.organization


@dataclasses.dataclass(frozen=True)
class Trio:
    organization: organization_pb2.Organization
    owner: Account
    admin: Account
    member: Account


@pytest.fixture
def trio(auth: Auth, orgs: Orgs) -> Trio:
    owner, admin, member = sign_up(auth, "owner"), sign_up(auth, "admin"), sign_up(auth, "member")
    organization = create_organization(orgs, owner, name="Acme")
    add_member(orgs, owner, organization, admin, ADMIN)
    add_member(orgs, owner, organization, member, MEMBER)
    return Trio(organization, owner, admin, member)


# --- UpdateOrganization -----------------------------------------------------------------------


def test_owner_and_admin_rename_and_each_rename_is_audited(
    orgs: Orgs, sessions: Sessions, trio: Trio
) -> None:
    slug = trio.organization.slug
    renamed = rename(orgs, trio.admin, slug, name="Acme Corp")
    assert (renamed.name, renamed.slug, renamed.caller_role) == ("Acme Corp", slug, ADMIN)
    assert rename(orgs, trio.owner, slug, name="Acme Inc").name == "Acme Inc"
    assert get(orgs, trio.member, slug).name == "Acme Inc"

    first, second = sorted(
        events(sessions, trio.organization.id, "organization.renamed"),
        key=lambda e: json.loads(e.details)["old_name"],
    )
    assert (first.actor_id, second.actor_id) == (uuid.UUID(trio.admin.id), uuid.UUID(trio.owner.id))
    assert json.loads(first.details) == {"old_name": "Acme", "new_name": "Acme Corp"}
    assert (first.target_type, first.target_id) == ("organization", trio.organization.id)


def test_members_cannot_rename_and_admins_cannot_change_the_slug(
    orgs: Orgs, sessions: Sessions, trio: Trio
) -> None:
    slug = trio.organization.slug
    for caller, kwargs in (
        (trio.member, {"name": "Nope"}),
        (trio.admin, {"new_slug": unique_slug()}),
        (trio.admin, {"name": "Nope", "new_slug": unique_slug()}),
    ):
        error = error_of(lambda c=caller, k=kwargs: rename(orgs, c, slug, **k))  # type: ignore[misc]
        assert (error.code, error.reason) == (DENIED, "PERMISSION_DENIED")
    assert get(orgs, trio.owner, slug).name == "Acme"
    assert admin_events(sessions, trio.organization.id) == []


def test_non_member_gets_not_found(auth: Auth, orgs: Orgs, trio: Trio) -> None:
    stranger = sign_up(auth)
    error = error_of(lambda: rename(orgs, stranger, trio.organization.slug, name="Mine"))
    assert (error.code, error.reason) == (NOT_FOUND, "ORGANIZATION_NOT_FOUND")


@pytest.mark.parametrize(
    ("paths", "field"),
    [
        ([], "organization.slug"),  # empty: the fields set, here the slug
        (["*"], "organization.name"),
        (["create_time"], "update_mask"),
        (["name", "id"], "update_mask"),
        (["slug"], "organization.slug"),
        (["name"], "organization.name"),
    ],
)
def test_bad_update_is_invalid_argument_naming_the_field(
    orgs: Orgs, trio: Trio, paths: list[str], field: str
) -> None:
    request = pb.UpdateOrganizationRequest(
        slug=trio.organization.slug,
        organization=organization_pb2.Organization(name="", slug="Not A Slug"),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    error = error_of(lambda: orgs.UpdateOrganization(request, metadata=trio.owner.metadata))
    assert error.code == INVALID
    assert field in error.field_violations, error


def test_an_empty_mask_updates_the_fields_set(orgs: Orgs, trio: Trio) -> None:
    for organization, field in (
        (organization_pb2.Organization(), "update_mask"),
        (organization_pb2.Organization(name="Acme 2"), ""),
    ):
        request = pb.UpdateOrganizationRequest(
            organization_id=trio.organization.id, organization=organization
        )
        if field:
            with pytest.raises(grpc.RpcError) as caught:
                orgs.UpdateOrganization(request, metadata=trio.owner.metadata)
            error = rich_error(caught.value)
            assert set(error.field_violations) == {field}
        else:
            updated = orgs.UpdateOrganization(request, metadata=trio.owner.metadata).organization
            assert (updated.name, updated.slug) == ("Acme 2", trio.organization.slug)


def test_slug_change_keeps_the_old_slug_redirecting_in_every_rpc(
    auth: Auth, orgs: Orgs, sessions: Sessions, clock: FakeClock, trio: Trio
) -> None:
    old, new = trio.organization.slug, unique_slug("new")
    changed = rename(orgs, trio.owner, old, new_slug=new)
    assert changed.slug == new

    # GetOrganization by the old slug answers with the current one, so clients can update.
    assert get(orgs, trio.member, old).slug == new
    assert get(orgs, trio.member, new).id == trio.organization.id
    members = orgs.ListMembers(pb.ListMembersRequest(slug=old), metadata=trio.member.metadata)
    assert len(members.members) == 3
    newcomer = sign_up(auth)
    orgs.AddMember(
        pb.AddMemberRequest(slug=old, user_id=newcomer.id, role=MEMBER),
        metadata=trio.admin.metadata,
    )
    orgs.CreateServiceAccount(
        pb.CreateServiceAccountRequest(slug=old, name="ci", scopes=["introspect"]),
        metadata=trio.admin.metadata,
    )
    listed = orgs.ListServiceAccounts(
        pb.ListServiceAccountsRequest(slug=old), metadata=trio.admin.metadata
    )
    assert [a.name for a in listed.service_accounts] == ["ci"]
    # A non-member still learns nothing through the old slug.
    error = error_of(lambda: get(orgs, newcomer, unique_slug()))
    assert error.reason == "ORGANIZATION_NOT_FOUND"
    stranger = sign_up(auth)
    assert error_of(lambda: get(orgs, stranger, old)).reason == "ORGANIZATION_NOT_FOUND"

    (event,) = events(sessions, trio.organization.id, "organization.slug_changed")
    assert json.loads(event.details) == {"old_slug": old, "new_slug": new, "redirect_days": 30}

    # After ORGANIZATION_SLUG_REDIRECT_DAYS (30) the old slug is gone, and free.
    clock.advance(days=30, seconds=1)
    member, stranger = signed_in_again(auth, trio.member), signed_in_again(auth, stranger)
    assert error_of(lambda: get(orgs, member, old)).code == NOT_FOUND
    assert create_organization(orgs, stranger, slug=old).slug == old


def test_a_redirecting_slug_cannot_be_claimed(auth: Auth, orgs: Orgs, trio: Trio) -> None:
    old = trio.organization.slug
    rename(orgs, trio.owner, old, new_slug=unique_slug("new"))
    other_owner = sign_up(auth)
    error = error_of(lambda: create_organization(orgs, other_owner, slug=old))
    assert (error.code, error.reason) == (EXISTS, "SLUG_RESERVED")
    other = create_organization(orgs, other_owner)
    error = error_of(lambda: rename(orgs, other_owner, other.slug, new_slug=old))
    assert (error.code, error.reason) == (EXISTS, "SLUG_RESERVED")
    assert get(orgs, other_owner, other.slug).slug == other.slug
    # A current slug is SLUG_TAKEN, as on creation.
    error = error_of(
        lambda: rename(orgs, other_owner, other.slug, new_slug=get(orgs, trio.owner, old).slug)
    )
    assert (error.code, error.reason) == (EXISTS, "SLUG_TAKEN")


def test_the_organization_may_take_its_old_slug_back(
    orgs: Orgs, sessions: Sessions, trio: Trio
) -> None:
    old, new = trio.organization.slug, unique_slug("new")
    rename(orgs, trio.owner, old, new_slug=new)
    assert rename(orgs, trio.owner, old, new_slug=old).slug == old
    # Now `new` redirects to it, and `old` is its current slug again.
    assert get(orgs, trio.member, new).slug == old
    with sessions.read() as session:
        slugs = set(session.scalars(sa.select(OrganizationSlugRedirect.slug)))
    assert slugs == {new}


@pytest.fixture
def no_redirect_orgs(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[tuple[Auth, Orgs]]:
    """A server with ORGANIZATION_SLUG_REDIRECT_DAYS=0."""
    server: App = build_server(
        dataclasses.replace(settings, organization_slug_redirect_days=0),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel), Orgs(channel)
    server.stop(None)


def test_with_zero_redirect_days_the_old_slug_is_free_at_once(
    no_redirect_orgs: tuple[Auth, Orgs],
) -> None:
    auth, orgs = no_redirect_orgs
    owner, other = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    rename(orgs, owner, organization.slug, new_slug=unique_slug("new"))
    assert error_of(lambda: get(orgs, owner, organization.slug)).code == NOT_FOUND
    assert create_organization(orgs, other, slug=organization.slug).slug == organization.slug


# --- DeleteOrganization -----------------------------------------------------------------------


def delete(orgs: Orgs, caller: Account, slug: str, confirm: str) -> Any:
    return orgs.DeleteOrganization(
        pb.DeleteOrganizationRequest(slug=slug, confirm_slug=confirm), metadata=caller.metadata
    )


def test_delete_needs_the_exact_current_slug(orgs: Orgs, sessions: Sessions, trio: Trio) -> None:
    slug = trio.organization.slug
    for confirm in ("", slug.upper(), f" {slug}", "something-else"):
        error = error_of(lambda c=confirm: delete(orgs, trio.owner, slug, c))  # type: ignore[misc]
        assert error.code == INVALID
        assert set(error.field_violations) == {"confirm_slug"}
    # A former slug still addresses it, but the confirmation is the current slug.
    new = unique_slug("new")
    rename(orgs, trio.owner, slug, new_slug=new)
    error = error_of(lambda: delete(orgs, trio.owner, slug, slug))
    assert set(error.field_violations) == {"confirm_slug"}
    assert get(orgs, trio.owner, new).id == trio.organization.id
    assert "organization.deleted" not in admin_events(sessions, trio.organization.id)


def test_only_owners_may_delete(orgs: Orgs, sessions: Sessions, trio: Trio) -> None:
    slug = trio.organization.slug
    for caller in (trio.admin, trio.member):
        error = error_of(lambda c=caller: delete(orgs, c, slug, slug))  # type: ignore[misc]
        assert (error.code, error.reason) == (DENIED, "PERMISSION_DENIED")
    assert admin_events(sessions, trio.organization.id) == []


def test_delete_removes_memberships_service_accounts_and_offers(
    auth: Auth, orgs: Orgs, sessions: Sessions, trio: Trio
) -> None:
    slug = trio.organization.slug
    created = orgs.CreateServiceAccount(
        pb.CreateServiceAccountRequest(slug=slug, name="ci", scopes=["introspect"]),
        metadata=trio.owner.metadata,
    )
    orgs.OfferOwnershipTransfer(
        pb.OfferOwnershipTransferRequest(slug=slug, user_id=trio.admin.id),
        metadata=trio.owner.metadata,
    )
    rename(orgs, trio.owner, slug, new_slug=unique_slug("new"))
    current = get(orgs, trio.owner, slug).slug
    # A service token in use (so cached as verified) before the organization goes.
    token = auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=created.secret)
    ).access_token
    introspect = auth_service_pb2.IntrospectTokenRequest(token=token)
    assert auth.IntrospectToken(introspect, metadata=(("authorization", f"Bearer {token}"),)).active

    delete(orgs, trio.owner, slug, current)  # by the former slug, confirmed with the current

    # Its service accounts' access tokens fail on their very next call, cached or not.
    refused = error_of(
        lambda: auth.IntrospectToken(introspect, metadata=(("authorization", f"Bearer {token}"),))
    )
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED

    for caller in (trio.owner, trio.member):
        assert error_of(lambda c=caller: get(orgs, c, current)).code == NOT_FOUND  # type: ignore[misc]
    organization_id = uuid.UUID(trio.organization.id)
    with sessions.read() as session:
        for model in (Membership, ServiceAccount, OwnershipOffer, OrganizationSlugRedirect):
            count = session.scalar(
                sa.select(sa.func.count())
                .select_from(model)
                .where(model.organization_id == organization_id)
            )
            assert count == 0, model
    error = error_of(
        lambda: auth.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(secret=created.secret)
        )
    )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    # Both slugs are free at once.
    assert create_organization(orgs, trio.member, slug=slug).slug == slug
    assert create_organization(orgs, trio.member, slug=current).slug == current
    # The audit record outlives the organization.
    (event,) = events(sessions, trio.organization.id, "organization.deleted")
    assert event.actor_id == uuid.UUID(trio.owner.id)
    assert json.loads(event.details) == {"slug": current, "name": "Acme", "members": 3}


# --- Ownership transfer -----------------------------------------------------------------------


def offer(
    orgs: Orgs, caller: Account, slug: str, to: Account
) -> organization_pb2.OwnershipTransfer:
    return orgs.OfferOwnershipTransfer(
        pb.OfferOwnershipTransferRequest(slug=slug, email=to.email), metadata=caller.metadata
    ).ownership_transfer


def transfer_call(orgs: Orgs, rpc: str, caller: Account, slug: str) -> Any:
    request_class = getattr(pb, f"{rpc}Request")
    return getattr(orgs, rpc)(request_class(slug=slug), metadata=caller.metadata)


def test_offer_and_accept_swaps_the_roles(
    orgs: Orgs, sessions: Sessions, clock: FakeClock, trio: Trio
) -> None:
    slug = trio.organization.slug
    made = offer(orgs, trio.owner, slug, trio.member)
    assert (made.from_user_id, made.to_user_id, made.to_email) == (
        trio.owner.id,
        trio.member.id,
        trio.member.email,
    )
    assert made.expire_time.ToDatetime(tzinfo=dt.UTC) == clock() + dt.timedelta(days=7)
    # Any member sees the pending offer.
    seen = transfer_call(orgs, "GetOwnershipTransfer", trio.admin, slug).ownership_transfer
    assert seen == made

    accepted = transfer_call(orgs, "AcceptOwnershipTransfer", trio.member, slug).member
    assert (accepted.user_id, accepted.role) == (trio.member.id, OWNER)
    assert roles_by_user(orgs, trio.member, trio.organization) == {
        trio.owner.id: ADMIN,
        trio.admin.id: ADMIN,
        trio.member.id: OWNER,
    }
    error = error_of(lambda: transfer_call(orgs, "GetOwnershipTransfer", trio.admin, slug))
    assert (error.code, error.reason) == (NOT_FOUND, "OWNERSHIP_TRANSFER_NOT_FOUND")

    offered, accepted_event = (
        events(sessions, trio.organization.id, a)[0]
        for a in ("ownership.offered", "ownership.accepted")
    )
    assert offered.user_id == accepted_event.user_id == uuid.UUID(trio.member.id)
    assert offered.actor_id == uuid.UUID(trio.owner.id)
    assert accepted_event.actor_id == uuid.UUID(trio.member.id)
    assert json.loads(offered.details) == {"to_email": trio.member.email, "replaced": False}
    assert json.loads(accepted_event.details) == {"from_user_id": trio.owner.id}


def test_a_new_offer_replaces_the_pending_one(orgs: Orgs, sessions: Sessions, trio: Trio) -> None:
    slug = trio.organization.slug
    offer(orgs, trio.owner, slug, trio.member)
    offer(orgs, trio.owner, slug, trio.admin)
    error = error_of(lambda: transfer_call(orgs, "AcceptOwnershipTransfer", trio.member, slug))
    assert (error.code, error.reason) == (DENIED, "PERMISSION_DENIED")
    transfer_call(orgs, "AcceptOwnershipTransfer", trio.admin, slug)
    assert roles_by_user(orgs, trio.admin, trio.organization)[trio.admin.id] == OWNER
    assert admin_events(sessions, trio.organization.id) == [
        "ownership.accepted",
        "ownership.offered",
        "ownership.offered",
    ]
    replaced = [
        json.loads(e.details)["replaced"]
        for e in events(sessions, trio.organization.id, "ownership.offered")
    ]
    assert sorted(replaced) == [False, True]


def test_offer_refusals(auth: Auth, orgs: Orgs, sessions: Sessions, trio: Trio) -> None:
    slug = trio.organization.slug
    second_owner, stranger = sign_up(auth), sign_up(auth)
    add_member(orgs, trio.owner, trio.organization, second_owner, OWNER)
    cases = [
        (trio.admin, trio.member, DENIED, "PERMISSION_DENIED"),
        (trio.member, trio.admin, DENIED, "PERMISSION_DENIED"),
        (trio.owner, second_owner, PRECONDITION, "ALREADY_OWNER"),
        (trio.owner, trio.owner, PRECONDITION, "ALREADY_OWNER"),
        (trio.owner, stranger, NOT_FOUND, "MEMBER_NOT_FOUND"),
        (stranger, trio.member, NOT_FOUND, "ORGANIZATION_NOT_FOUND"),
    ]
    for caller, target, code, reason in cases:
        error = error_of(lambda c=caller, t=target: offer(orgs, c, slug, t))  # type: ignore[misc]
        assert (error.code, error.reason) == (code, reason), (caller, target)
    assert admin_events(sessions, trio.organization.id) == []


def test_decline_and_cancel(auth: Auth, orgs: Orgs, sessions: Sessions, trio: Trio) -> None:
    slug = trio.organization.slug
    second_owner = sign_up(auth)
    add_member(orgs, trio.owner, trio.organization, second_owner, OWNER)

    offer(orgs, trio.owner, slug, trio.member)
    for caller in (trio.owner, trio.admin):  # only the target declines
        error = error_of(lambda c=caller: transfer_call(orgs, "DeclineOwnershipTransfer", c, slug))  # type: ignore[misc]
        assert (error.code, error.reason) == (DENIED, "PERMISSION_DENIED")
    transfer_call(orgs, "DeclineOwnershipTransfer", trio.member, slug)
    error = error_of(lambda: transfer_call(orgs, "AcceptOwnershipTransfer", trio.member, slug))
    assert (error.code, error.reason) == (NOT_FOUND, "OWNERSHIP_TRANSFER_NOT_FOUND")

    offer(orgs, trio.owner, slug, trio.admin)
    for caller in (trio.admin, trio.member):  # only owners cancel, even the target cannot
        error = error_of(lambda c=caller: transfer_call(orgs, "CancelOwnershipTransfer", c, slug))  # type: ignore[misc]
        assert (error.code, error.reason) == (DENIED, "PERMISSION_DENIED")
    transfer_call(orgs, "CancelOwnershipTransfer", second_owner, slug)  # any owner
    error = error_of(lambda: transfer_call(orgs, "CancelOwnershipTransfer", second_owner, slug))
    assert (error.code, error.reason) == (NOT_FOUND, "OWNERSHIP_TRANSFER_NOT_FOUND")

    assert admin_events(sessions, trio.organization.id) == [
        "ownership.cancelled",
        "ownership.declined",
        "ownership.offered",
        "ownership.offered",
    ]
    cancelled = events(sessions, trio.organization.id, "ownership.cancelled")[0]
    assert (cancelled.actor_id, cancelled.user_id) == (
        uuid.UUID(second_owner.id),
        uuid.UUID(trio.admin.id),
    )


def test_an_offer_expires_after_seven_days(
    auth: Auth, orgs: Orgs, clock: FakeClock, trio: Trio
) -> None:
    slug = trio.organization.slug
    offer(orgs, trio.owner, slug, trio.member)
    clock.advance(days=7)
    member, owner = signed_in_again(auth, trio.member), signed_in_again(auth, trio.owner)
    error = error_of(lambda: transfer_call(orgs, "AcceptOwnershipTransfer", member, slug))
    assert (error.code, error.reason) == (NOT_FOUND, "OWNERSHIP_TRANSFER_NOT_FOUND")
    assert roles_by_user(orgs, owner, trio.organization)[owner.id] == OWNER


def test_accept_after_the_offerer_lost_ownership_is_refused(
    auth: Auth, orgs: Orgs, sessions: Sessions, trio: Trio
) -> None:
    slug = trio.organization.slug
    second_owner = sign_up(auth)
    add_member(orgs, trio.owner, trio.organization, second_owner, OWNER)
    offer(orgs, trio.owner, slug, trio.member)
    orgs.UpdateMemberRole(
        pb.UpdateMemberRoleRequest(slug=slug, user_id=trio.owner.id, role=ADMIN),
        metadata=second_owner.metadata,
    )
    error = error_of(lambda: transfer_call(orgs, "AcceptOwnershipTransfer", trio.member, slug))
    assert (error.code, error.reason) == (PRECONDITION, "OFFERER_NOT_OWNER")
    assert roles_by_user(orgs, trio.member, trio.organization)[trio.member.id] == MEMBER
    assert "ownership.accepted" not in admin_events(sessions, trio.organization.id)


def test_accept_after_the_target_left_is_refused(orgs: Orgs, trio: Trio) -> None:
    slug = trio.organization.slug
    offer(orgs, trio.owner, slug, trio.member)
    orgs.RemoveMember(
        pb.RemoveMemberRequest(slug=slug, user_id=trio.member.id), metadata=trio.admin.metadata
    )
    error = error_of(lambda: transfer_call(orgs, "AcceptOwnershipTransfer", trio.member, slug))
    assert (error.code, error.reason) == (PRECONDITION, "TARGET_NOT_MEMBER")
