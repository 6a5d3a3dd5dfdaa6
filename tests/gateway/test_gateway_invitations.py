"""The invitation RPCs over HTTP/JSON, and their OpenAPI operations. The owner and the invitee
verify their addresses through the real verification email (tests/mail_support.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.config import Settings
from tests.gateway.helpers import bearer, error_of, register
from tests.mail_support import Mailbox, verify
from tests.support import FakeClock


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url)


def _create(http: httpx.Client, token: str, slug: str) -> None:
    response = http.post(
        "/organizations", json={"name": "Acme", "slug": slug}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text


def _invite(http: httpx.Client, token: str, slug: str, email: str, role: str) -> dict[str, Any]:
    response = http.post(
        f"/organizations/{slug}/invitations",
        json={"email": email, "role": role},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    invitation: dict[str, Any] = response.json()["invitation"]
    return invitation


def test_invitations_over_http(
    http: httpx.Client,
    auth: auth_service_pb2_grpc.AuthServiceStub,
    mailbox: Mailbox,
    clock: FakeClock,
) -> None:
    registered = register(http)
    owner = registered["tokens"]["accessToken"]
    _create(http, owner, "acme-invite")
    # Sending needs the sender's own address verified.
    error = error_of(
        _raw_invite(http, owner, "acme-invite", "someone@example.com", "ORGANIZATION_ROLE_MEMBER")
    )
    assert (error.http_status, error.reason) == (400, "EMAIL_NOT_VERIFIED")
    verify(auth, mailbox, registered["user"]["email"])
    invitee = register(http, name="Grace")
    invitee_token, invitee_email = invitee["tokens"]["accessToken"], invitee["user"]["email"]

    sent = _invite(http, owner, "acme-invite", invitee_email, "ORGANIZATION_ROLE_ADMIN")
    assert (sent["email"], sent["role"], sent["state"], sent["sendCount"]) == (
        invitee_email,
        "ORGANIZATION_ROLE_ADMIN",
        "INVITATION_STATE_PENDING",
        1,
    )
    assert sent["organizationSlug"] == "acme-invite"
    listed = http.get(
        "/organizations/acme-invite/invitations",
        params={"include_closed": "true"},
        headers=bearer(owner),
    )
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["invitations"]] == [sent["id"]]

    error = error_of(
        http.post(
            f"/organizations/acme-invite/invitations/{sent['id']}:resend", headers=bearer(owner)
        )
    )
    assert (error.http_status, error.reason, error.retry_delay) == (
        429,
        "INVITATION_RECENTLY_SENT",
        "60s",
    )
    error = error_of(
        _raw_invite(http, owner, "acme-invite", invitee_email.upper(), "ORGANIZATION_ROLE_MEMBER")
    )
    assert (error.http_status, error.reason) == (409, "INVITATION_PENDING")

    # The invitee's side: their address is verified first.
    error = error_of(http.get("/invitations", headers=bearer(invitee_token)))
    assert (error.http_status, error.reason) == (400, "EMAIL_NOT_VERIFIED")
    verify(auth, mailbox, invitee_email)
    mine = http.get("/invitations", headers=bearer(invitee_token))
    assert mine.status_code == 200, mine.text
    assert [i["id"] for i in mine.json()["invitations"]] == [sent["id"]]
    error = error_of(http.post(f"/invitations/{sent['id']}:accept", headers=bearer(owner)))
    assert (error.http_status, error.reason) == (404, "INVITATION_NOT_FOUND")
    accepted = http.post(f"/invitations/{sent['id']}:accept", headers=bearer(invitee_token))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["organization"]["callerRole"] == "ORGANIZATION_ROLE_ADMIN"
    error = error_of(http.post(f"/invitations/{sent['id']}:decline", headers=bearer(invitee_token)))
    assert (error.http_status, error.reason) == (400, "INVITATION_ACCEPTED")

    # Decline and cancel.
    other = register(http)
    other_token, other_email = other["tokens"]["accessToken"], other["user"]["email"]
    verify(auth, mailbox, other_email)
    first = _invite(http, owner, "acme-invite", other_email, "ORGANIZATION_ROLE_MEMBER")
    declined = http.post(f"/invitations/{first['id']}:decline", headers=bearer(other_token))
    assert (declined.status_code, declined.json()) == (200, {})
    # One message a minute to an address, whatever became of the last invitation.
    error = error_of(
        _raw_invite(http, owner, "acme-invite", other_email, "ORGANIZATION_ROLE_MEMBER")
    )
    assert (error.http_status, error.reason, error.retry_delay) == (
        429,
        "INVITATION_RECENTLY_SENT",
        "60s",
    )
    clock.advance(seconds=60)
    second = _invite(http, owner, "acme-invite", other_email, "ORGANIZATION_ROLE_MEMBER")
    cancelled = http.post(
        f"/organizations/acme-invite/invitations/{second['id']}:cancel", headers=bearer(owner)
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["invitation"]["state"] == "INVITATION_STATE_CANCELLED"
    error = error_of(http.post(f"/invitations/{second['id']}:accept", headers=bearer(other_token)))
    assert (error.http_status, error.reason) == (400, "INVITATION_CANCELLED")
    # The organization's list holds no open invitation now.
    listed = http.get("/organizations/acme-invite/invitations", headers=bearer(owner))
    assert listed.json().get("invitations", []) == []


def _raw_invite(http: httpx.Client, token: str, slug: str, email: str, role: str) -> httpx.Response:
    return http.post(
        f"/organizations/{slug}/invitations",
        json={"email": email, "role": role},
        headers=bearer(token),
    )


def test_openapi_describes_each_invitation_operation(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    expected = {
        ("/organizations/{slug}/invitations", "post"): "CreateInvitation",
        ("/organizations/{slug}/invitations", "get"): "ListInvitations",
        ("/organizations/{slug}/invitations/{invitation_id}:resend", "post"): "ResendInvitation",
        ("/organizations/{slug}/invitations/{invitation_id}:cancel", "post"): "CancelInvitation",
        ("/invitations", "get"): "ListMyInvitations",
        ("/invitations/{invitation_id}:accept", "post"): "AcceptInvitation",
        ("/invitations/{invitation_id}:decline", "post"): "DeclineInvitation",
    }
    for (path, verb), rpc in expected.items():
        operation = paths[path][verb]
        assert operation["operationId"] == f"OrganizationService_{rpc}"
        assert operation["description"]
