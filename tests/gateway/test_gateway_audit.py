"""The audit log over HTTP: GET /audit/events and /organizations/{slug}/audit/events, with the
X-Request-Id header kept on the events."""

from __future__ import annotations

import httpx

from tests.gateway.helpers import bearer, error_of, register
from tests.support import FakeClock


def test_audit_events_over_http_keep_the_request_id(http: httpx.Client, clock: FakeClock) -> None:
    owner = register(http, **{"x-request-id": "http-register-1"})
    token = owner["tokens"]["accessToken"]
    clock.advance(seconds=1)
    created = http.post(
        "/organizations",
        json={"name": "Acme", "slug": "acme-http-audit"},
        headers={**bearer(token), "x-request-id": "http-org-1", "user-agent": "audit-http/2"},
    )
    assert created.status_code == 200, created.text

    mine = http.get("/audit/events", headers=bearer(token))
    assert mine.status_code == 200, mine.text
    events = mine.json()["auditEvents"]
    assert [e["action"] for e in events] == ["organization.created", "account.registered"]
    assert events[1]["requestId"] == "http-register-1"
    assert events[1]["actor"]["type"] == "anonymous"
    org_event = events[0]
    assert org_event["requestId"] == "http-org-1"
    assert org_event["userAgent"] == "audit-http/2"
    assert org_event["actor"] == {"type": "user", "id": owner["user"]["id"]}
    assert org_event["details"] == {"name": "Acme", "slug": "acme-http-audit"}

    by_org = http.get(
        "/organizations/acme-http-audit/audit/events",
        params={"action": "organization.created", "startTime": "2000-01-01T00:00:00Z"},
        headers=bearer(token),
    )
    assert by_org.status_code == 200, by_org.text
    assert [e["id"] for e in by_org.json()["auditEvents"]] == [org_event["id"]]

    # An overlong request id is not kept; an outsider learns nothing of the organization.
    other = register(http, **{"x-request-id": "r" * 65})
    other_token = other["tokens"]["accessToken"]
    own = http.get("/audit/events", headers=bearer(other_token)).json()["auditEvents"]
    assert [e.get("requestId", "") for e in own] == [""]
    refused = http.get("/organizations/acme-http-audit/audit/events", headers=bearer(other_token))
    assert (refused.status_code, error_of(refused).reason) == (404, "ORGANIZATION_NOT_FOUND")
