"""RBAC: every caller role against every write action, plus the last-owner rule.

owner   everything, including granting and removing ownership, the slug, deleting, and
        offering or cancelling an ownership transfer
admin   add, remove and re-role admins and members; never touch an owner nor grant owner;
        rename; manage service accounts
member  read only
anyone  may leave, except the last owner; non-members get NOT_FOUND for everything
target  only the member an ownership transfer is offered to accepts or declines it
invitee only the person invited (here the non-member, verified) accepts or declines an
        invitation; anyone else gets INVITATION_NOT_FOUND

Sending and resending an invitation need the sender's address verified, checked after the
rules above: the matrix verifies an owner or admin only where the action must succeed, so the
refused callers are unverified and still get PERMISSION_DENIED or NOT_FOUND. Only the
invitation actions send real mail (to verify addresses); every other test's goes to the log.

Every write RPC of OrganizationService (scope write in the contract) is in the matrix
(test_every_write_rpc_is_in_the_matrix).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf import field_mask_pb2

from luman.auth.v1 import auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2 as pb
from luman.server import methods
from luman.server.config import Settings
from tests.mail_support import Mailbox, verify
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
from tests.support import FakeClock, unique_email

Orgs = organization_service_pb2_grpc.OrganizationServiceStub
Auth = auth_service_pb2_grpc.AuthServiceStub
Role: TypeAlias = organization_pb2.OrganizationRole.ValueType
ROLE_NAMES: dict[Role, str] = {OWNER: "owner", ADMIN: "admin", MEMBER: "member"}

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclasses.dataclass(frozen=True)
class Team:
    """An organization with two of each role, a non-member, and an outsider to add."""

    organization: organization_pb2.Organization
    by_role: dict[str, Account]  # the caller of each kind
    targets: dict[Role, Account]  # the second person holding each role
    non_member: Account
    outsider: Account
    clock: FakeClock
    # Verifies an account's address through its verification mail, once; only the tests
    # whose action sends real mail (Action.mail) may call it.
    verify: Callable[[Account], None]

    def invite(self, orgs: Orgs, email: str) -> str:
        """The first owner (verified now) invites `email` as a member; the invitation's id."""
        owner = self.by_role["owner"]
        self.verify(owner)
        response = orgs.CreateInvitation(
            pb.CreateInvitationRequest(slug=self.organization.slug, email=email, role=MEMBER),
            metadata=owner.metadata,
        )
        return str(response.invitation.id)


def _mails(request: pytest.FixtureRequest) -> bool:
    """Whether the test's action sends real mail (see Action.mail)."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("action_name") if callspec is not None else None
    return name is not None and ACTIONS[name].mail


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Real mail for the invitation actions, whose senders and invitee verify their
    addresses through it; the log for every other test (nothing there reads mail)."""
    if not _mails(request):
        return settings
    mailbox: Mailbox = request.getfixturevalue("mailbox")
    return dataclasses.replace(settings, smtp_url=mailbox.url)


@pytest.fixture
def team(auth: Auth, orgs: Orgs, clock: FakeClock, request: pytest.FixtureRequest) -> Team:
    verified: set[str] = set()

    def verify_once(account: Account) -> None:
        if account.id not in verified:
            verify(auth, request.getfixturevalue("mailbox"), account.email)
            verified.add(account.id)

    owner = sign_up(auth, "owner")
    organization = create_organization(orgs, owner)
    people = {
        name: sign_up(auth, name) for name in ("owner2", "admin", "admin2", "member", "member2")
    }
    for name, account in people.items():
        role = {"owner2": OWNER, "admin": ADMIN, "admin2": ADMIN}.get(name, MEMBER)
        add_member(orgs, owner, organization, account, role)
    non_member = sign_up(auth, "stranger")
    return Team(
        organization=organization,
        by_role={
            "owner": owner,
            "admin": people["admin"],
            "member": people["member"],
            "non-member": non_member,
        },
        targets={OWNER: people["owner2"], ADMIN: people["admin2"], MEMBER: people["member2"]},
        non_member=non_member,
        outsider=sign_up(auth, "outsider"),
        clock=clock,
        verify=verify_once,
    )


@dataclasses.dataclass(frozen=True)
class Action:
    """One thing a caller tries; `apply` is the roles map afterwards if it succeeds."""

    call: Callable[[Orgs, Team, Account], Any]
    apply: Callable[[dict[str, Role], Team, Account], None]
    rpc: str = ""  # the RPC it exercises (default: from the action's name, see _rpc)
    deletes: bool = False  # success deletes the organization
    not_found: str = "ORGANIZATION_NOT_FOUND"  # the reason of a NOT_FOUND refusal
    mail: bool = False  # an invitation action: real mail, to verify addresses through it
    sends: bool = False  # the caller sends mail: their address is verified where it succeeds


def _add(role: Role) -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.AddMember(
            pb.AddMemberRequest(
                organization_id=team.organization.id, user_id=team.outsider.id, role=role
            ),
            metadata=caller.metadata,
        )

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        roles[team.outsider.id] = role

    return Action(call, apply)


def _remove(target_role: Role) -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.RemoveMember(
            pb.RemoveMemberRequest(
                organization_id=team.organization.id, user_id=team.targets[target_role].id
            ),
            metadata=caller.metadata,
        )

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        del roles[team.targets[target_role].id]

    return Action(call, apply)


def _change(target_role: Role, new_role: Role) -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.UpdateMemberRole(
            pb.UpdateMemberRoleRequest(
                organization_id=team.organization.id,
                user_id=team.targets[target_role].id,
                role=new_role,
            ),
            metadata=caller.metadata,
        )

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        roles[team.targets[target_role].id] = new_role

    return Action(call, apply)


def _leave() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.RemoveMember(
            pb.RemoveMemberRequest(slug=team.organization.slug, user_id=caller.id),
            metadata=caller.metadata,
        )

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        del roles[caller.id]

    return Action(call, apply)


def _unchanged(roles: dict[str, Role], team: Team, caller: Account) -> None:
    pass


def _rename(field: str) -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.UpdateOrganization(
            pb.UpdateOrganizationRequest(
                organization_id=team.organization.id,
                organization=organization_pb2.Organization(name="Renamed", slug=unique_slug()),
                update_mask=field_mask_pb2.FieldMask(paths=[field]),
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "UpdateOrganization")


def _delete() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.DeleteOrganization(
            pb.DeleteOrganizationRequest(
                slug=team.organization.slug, confirm_slug=team.organization.slug
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "DeleteOrganization", deletes=True)


def _offer(orgs: Orgs, team: Team, to: Account) -> None:
    """The first owner offers ownership to `to` (the setup of the transfer actions)."""
    orgs.OfferOwnershipTransfer(
        pb.OfferOwnershipTransferRequest(slug=team.organization.slug, user_id=to.id),
        metadata=team.by_role["owner"].metadata,
    )


def _offer_transfer() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.OfferOwnershipTransfer(
            pb.OfferOwnershipTransferRequest(
                organization_id=team.organization.id, user_id=team.targets[MEMBER].id
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "OfferOwnershipTransfer")


def _answer_transfer(rpc: str) -> Action:
    """The first owner offers ownership to the admin; the caller then calls `rpc`."""

    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        _offer(orgs, team, team.by_role["admin"])
        request = getattr(pb, f"{rpc}Request")(slug=team.organization.slug)
        return getattr(orgs, rpc)(request, metadata=caller.metadata)

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        if rpc == "AcceptOwnershipTransfer":
            roles[team.by_role["admin"].id] = OWNER
            roles[team.by_role["owner"].id] = ADMIN

    return Action(call, apply, rpc)


def _create_organization() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return create_organization(orgs, caller)

    return Action(call, _unchanged, "CreateOrganization")


def _create_service_account() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.CreateServiceAccount(
            pb.CreateServiceAccountRequest(
                slug=team.organization.slug, name="ci", scopes=["introspect"]
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "CreateServiceAccount")


def _delete_service_account() -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        created = orgs.CreateServiceAccount(
            pb.CreateServiceAccountRequest(
                slug=team.organization.slug, name="ci", scopes=["introspect"]
            ),
            metadata=team.by_role["owner"].metadata,
        )
        return orgs.DeleteServiceAccount(
            pb.DeleteServiceAccountRequest(
                slug=team.organization.slug, service_account_id=created.service_account.id
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "DeleteServiceAccount")


def _invite(role: Role) -> Action:
    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        return orgs.CreateInvitation(
            pb.CreateInvitationRequest(
                organization_id=team.organization.id,
                email=f"invitee-{uuid.uuid4().hex[:8]}@example.com",
                role=role,
            ),
            metadata=caller.metadata,
        )

    return Action(call, _unchanged, "CreateInvitation", mail=True, sends=True)


def _manage_invitation(rpc: str) -> Action:
    """The first owner invites a new address (role member) a while ago; the caller then
    calls ResendInvitation or CancelInvitation of it."""

    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        invitation_id = team.invite(orgs, unique_email())
        team.clock.advance(seconds=61)  # past the one message a minute per address
        request = getattr(pb, f"{rpc}Request")(
            slug=team.organization.slug, invitation_id=invitation_id
        )
        return getattr(orgs, rpc)(request, metadata=caller.metadata)

    return Action(call, _unchanged, rpc, mail=True, sends=rpc == "ResendInvitation")


def _answer_invitation(rpc: str) -> Action:
    """The first owner invites the non-member; the caller then calls `rpc`. Only the
    invitee answers, with their address verified: they are verified when they call."""

    def call(orgs: Orgs, team: Team, caller: Account) -> Any:
        invitation_id = team.invite(orgs, team.non_member.email)
        if caller is team.non_member:
            team.verify(caller)
        request = getattr(pb, f"{rpc}Request")(invitation_id=invitation_id)
        return getattr(orgs, rpc)(request, metadata=caller.metadata)

    def apply(roles: dict[str, Role], team: Team, caller: Account) -> None:
        if rpc == "AcceptInvitation":
            roles[team.non_member.id] = MEMBER

    return Action(call, apply, rpc, not_found="INVITATION_NOT_FOUND", mail=True)


ACTIONS: dict[str, Action] = {
    **{f"add-{ROLE_NAMES[r]}": _add(r) for r in (MEMBER, ADMIN, OWNER)},
    **{f"remove-{ROLE_NAMES[r]}": _remove(r) for r in (MEMBER, ADMIN, OWNER)},
    **{
        f"change-{ROLE_NAMES[a]}-to-{ROLE_NAMES[b]}": _change(a, b)
        for a in (MEMBER, ADMIN, OWNER)
        for b in (MEMBER, ADMIN, OWNER)
    },
    "leave": _leave(),
    "create-organization": _create_organization(),
    "rename": _rename("name"),
    "change-slug": _rename("slug"),
    "delete": _delete(),
    "offer-transfer": _offer_transfer(),
    "accept-transfer": _answer_transfer("AcceptOwnershipTransfer"),
    "decline-transfer": _answer_transfer("DeclineOwnershipTransfer"),
    "cancel-transfer": _answer_transfer("CancelOwnershipTransfer"),
    "create-service-account": _create_service_account(),
    "delete-service-account": _delete_service_account(),
    **{f"invite-{ROLE_NAMES[r]}": _invite(r) for r in (MEMBER, ADMIN, OWNER)},
    "resend-invitation": _manage_invitation("ResendInvitation"),
    "cancel-invitation": _manage_invitation("CancelInvitation"),
    "accept-invitation": _answer_invitation("AcceptInvitation"),
    "decline-invitation": _answer_invitation("DeclineInvitation"),
}
# Only the member a transfer is offered to (here the admin) may answer it.
TARGET_ONLY = {"accept-transfer", "decline-transfer"}
ANYONE_MAY = {"create-organization"}  # not an action on this organization
# Only the invitee (here the non-member) may answer an invitation; to anyone else it is unknown.
INVITEE_ONLY = {"accept-invitation", "decline-invitation"}

ADMIN_MAY = {
    "add-member", "add-admin",
    "remove-member", "remove-admin",
    "change-member-to-member", "change-member-to-admin",
    "change-admin-to-member", "change-admin-to-admin",
    "leave",
    "rename", "create-service-account", "delete-service-account",
    "invite-member", "invite-admin", "resend-invitation", "cancel-invitation",
    *TARGET_ONLY, *ANYONE_MAY,
}  # fmt: skip
EXPECTED: dict[str, dict[str, grpc.StatusCode]] = {
    "owner": {action: DENIED if action in TARGET_ONLY else OK for action in ACTIONS},
    "admin": {action: OK if action in ADMIN_MAY else DENIED for action in ACTIONS},
    "member": {action: OK if action in {"leave", *ANYONE_MAY} else DENIED for action in ACTIONS},
    "non-member": {
        action: OK if action in {*ANYONE_MAY, *INVITEE_ONLY} else NOT_FOUND for action in ACTIONS
    },
}
for _row in ("owner", "admin", "member"):
    EXPECTED[_row].update(dict.fromkeys(INVITEE_ONLY, NOT_FOUND))
MATRIX = [
    pytest.param(caller, action, expected, id=f"{caller}-{action}")
    for caller, row in EXPECTED.items()
    for action, expected in row.items()
]


@pytest.mark.parametrize(("caller_kind", "action_name", "expected"), MATRIX)
def test_rbac_matrix(
    orgs: Orgs, team: Team, caller_kind: str, action_name: str, expected: grpc.StatusCode
) -> None:
    caller = team.by_role[caller_kind]
    action = ACTIONS[action_name]
    owner = team.by_role["owner"]
    before = roles_by_user(orgs, owner, team.organization)

    if expected is OK:
        if action.sends:
            team.verify(caller)
        action.call(orgs, team, caller)
        if action.deletes:
            error = error_of(
                lambda: orgs.GetOrganization(
                    pb.GetOrganizationRequest(organization_id=team.organization.id),
                    metadata=owner.metadata,
                )
            )
            assert error.reason == "ORGANIZATION_NOT_FOUND"
            return
        after = dict(before)
        action.apply(after, team, caller)
    else:
        error = error_of(lambda: action.call(orgs, team, caller))
        assert error.code == expected
        assert error.reason == ("PERMISSION_DENIED" if expected is DENIED else action.not_found)
        after = before
    # Read back through whichever owner is still a member (the first one may have left).
    observer = owner if owner.id in after else team.targets[OWNER]
    assert roles_by_user(orgs, observer, team.organization) == after


def _rpc(name: str, action: Action) -> str:
    if action.rpc:
        return action.rpc
    verb = name.split("-")[0]
    return {"add": "AddMember", "remove": "RemoveMember", "leave": "RemoveMember"}.get(
        verb, "UpdateMemberRole"
    )


def test_every_write_rpc_is_in_the_matrix() -> None:
    service = pb.DESCRIPTOR.services_by_name["OrganizationService"]
    policies = methods.policies()
    writes = {
        m.name
        for m in service.methods
        if policies[methods.method_path(service, m.name)].scope == "write"
    }
    assert {"UpdateOrganization", "DeleteOrganization", "AcceptOwnershipTransfer"} <= writes
    assert writes == {_rpc(name, action) for name, action in ACTIONS.items()}


# --- The last owner ---------------------------------------------------------------------------


def test_last_owner_can_neither_leave_nor_be_demoted(auth: Auth, orgs: Orgs) -> None:
    owner, admin = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, admin, ADMIN)

    def demote_to(role: Role) -> Callable[[], Any]:
        request = pb.UpdateMemberRoleRequest(
            organization_id=organization.id, user_id=owner.id, role=role
        )
        return lambda: orgs.UpdateMemberRole(request, metadata=owner.metadata)

    def leave() -> Any:
        return orgs.RemoveMember(
            pb.RemoveMemberRequest(organization_id=organization.id, user_id=owner.id),
            metadata=owner.metadata,
        )

    for attempt in (leave, demote_to(ADMIN), demote_to(MEMBER)):
        error = error_of(attempt)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LAST_OWNER")
    assert roles_by_user(orgs, owner, organization) == {owner.id: OWNER, admin.id: ADMIN}


def test_sole_member_who_is_owner_cannot_leave(auth: Auth, orgs: Orgs) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    error = error_of(
        lambda: orgs.RemoveMember(
            pb.RemoveMemberRequest(slug=organization.slug, user_id=owner.id),
            metadata=owner.metadata,
        )
    )
    assert error.reason == "LAST_OWNER"


def test_with_two_owners_one_may_leave_and_then_the_other_may_not(auth: Auth, orgs: Orgs) -> None:
    first, second = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, first)
    add_member(orgs, first, organization, second, OWNER)
    orgs.RemoveMember(
        pb.RemoveMemberRequest(slug=organization.slug, user_id=first.id), metadata=first.metadata
    )
    assert roles_by_user(orgs, second, organization) == {second.id: OWNER}
    error = error_of(
        lambda: orgs.RemoveMember(
            pb.RemoveMemberRequest(slug=organization.slug, user_id=second.id),
            metadata=second.metadata,
        )
    )
    assert error.reason == "LAST_OWNER"


def test_owner_may_demote_themselves_while_another_owner_remains(auth: Auth, orgs: Orgs) -> None:
    first, second = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, first)
    add_member(orgs, first, organization, second, OWNER)
    response = orgs.UpdateMemberRole(
        pb.UpdateMemberRoleRequest(organization_id=organization.id, user_id=first.id, role=MEMBER),
        metadata=first.metadata,
    )
    assert (response.member.user_id, response.member.role) == (first.id, MEMBER)
    # Now a member: read only.
    error = error_of(
        lambda: orgs.UpdateMemberRole(
            pb.UpdateMemberRoleRequest(
                organization_id=organization.id, user_id=first.id, role=OWNER
            ),
            metadata=first.metadata,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


def test_admin_may_step_down_but_not_promote_themselves(auth: Auth, orgs: Orgs) -> None:
    owner, admin = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, admin, ADMIN)

    def set_own_role(role: Role) -> Any:
        return orgs.UpdateMemberRole(
            pb.UpdateMemberRoleRequest(
                organization_id=organization.id, user_id=admin.id, role=role
            ),
            metadata=admin.metadata,
        )

    assert error_of(lambda: set_own_role(OWNER)).code == grpc.StatusCode.PERMISSION_DENIED
    assert set_own_role(MEMBER).member.role == MEMBER


# --- AddMember details ------------------------------------------------------------------------


def test_add_member_by_email_normalizes_it(auth: Auth, orgs: Orgs) -> None:
    owner, newcomer = sign_up(auth), sign_up(auth, "newcomer")
    organization = create_organization(orgs, owner)
    response = orgs.AddMember(
        pb.AddMemberRequest(
            slug=organization.slug, email=f"  {newcomer.email.upper()} ", role=ADMIN
        ),
        metadata=owner.metadata,
    )
    member = response.member
    assert (member.user_id, member.email, member.name, member.role) == (
        newcomer.id,
        newcomer.email,
        "Newcomer",
        ADMIN,
    )
    fetched = orgs.GetOrganization(
        pb.GetOrganizationRequest(slug=organization.slug), metadata=newcomer.metadata
    )
    assert fetched.organization.caller_role == ADMIN


def test_add_member_by_user_id(auth: Auth, orgs: Orgs) -> None:
    owner, newcomer = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    member = add_member(orgs, owner, organization, newcomer, MEMBER)
    assert (member.user_id, member.email, member.role) == (newcomer.id, newcomer.email, MEMBER)


def test_add_unknown_user_is_not_found(auth: Auth, orgs: Orgs) -> None:
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    for request in (
        pb.AddMemberRequest(slug=organization.slug, email="nobody@example.com", role=MEMBER),
        pb.AddMemberRequest(
            slug=organization.slug, user_id="6f1c8a52-52a3-4d0e-9d43-6a7f2f1b8b51", role=MEMBER
        ),
    ):
        error = error_of(lambda r=request: orgs.AddMember(r, metadata=owner.metadata))  # type: ignore[misc]
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


def test_add_existing_member_is_already_exists(auth: Auth, orgs: Orgs) -> None:
    owner, member = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    add_member(orgs, owner, organization, member, MEMBER)
    for target, role in ((member, ADMIN), (member, MEMBER), (owner, OWNER)):
        error = error_of(lambda t=target, r=role: add_member(orgs, owner, organization, t, r))  # type: ignore[misc]
        assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_MEMBER")
    assert roles_by_user(orgs, owner, organization) == {owner.id: OWNER, member.id: MEMBER}


def test_remove_or_change_a_non_member_is_not_found(auth: Auth, orgs: Orgs) -> None:
    owner, stranger = sign_up(auth), sign_up(auth)
    organization = create_organization(orgs, owner)
    for call in (
        lambda: orgs.RemoveMember(
            pb.RemoveMemberRequest(slug=organization.slug, user_id=stranger.id),
            metadata=owner.metadata,
        ),
        lambda: orgs.UpdateMemberRole(
            pb.UpdateMemberRoleRequest(slug=organization.slug, user_id=stranger.id, role=ADMIN),
            metadata=owner.metadata,
        ),
    ):
        error = error_of(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")
