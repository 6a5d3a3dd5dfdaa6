"""The data and calls the scenarios use, created through the running server's own API.

One owner who registers (an EdDSA access token) and makes a read-only personal token (the CLI
token path); an organization the owner creates, with 49 more registered users added as members
(50 in all). Each call is made once with a real client first (gRPC, or HTTP for the gateway's
calls): its response is what every h2load request must return.
"""

from __future__ import annotations

import dataclasses
import urllib.request

import grpc

from bench.h2load import GrpcCall, HttpCall
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import (
    organization_pb2,
    organization_service_pb2,
    organization_service_pb2_grpc,
)

AUTH_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
ORG_SERVICE = organization_service_pb2.DESCRIPTOR.services_by_name["OrganizationService"].full_name
GET_ME = f"/{AUTH_SERVICE}/GetMe"
LOGIN = f"/{AUTH_SERVICE}/Login"
LIST_MEMBERS = f"/{ORG_SERVICE}/ListMembers"

MEMBERS = 50
PASSWORD = "bench password 1234"  # noqa: S105 - a throwaway account in a throwaway database
OWNER_EMAIL = "bench-owner@example.com"
RPC_TIMEOUT_SECONDS = 30


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclasses.dataclass(frozen=True)
class Workload:
    getme_access: GrpcCall
    getme_cli: GrpcCall
    list_members: GrpcCall
    login: GrpcCall
    # The same GetMe and ListMembers through the HTTP gateway (None: the server has none).
    getme_http: HttpCall | None
    list_members_http: HttpCall | None


def prepare(port: int, http_port: int = 0) -> Workload:
    """Create the scenario data on the server at 127.0.0.1:`port` and record each call
    (the HTTP ones on `http_port`, when there is one)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_SECONDS)
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
        t = RPC_TIMEOUT_SECONDS

        owner = auth.Register(
            auth_service_pb2.RegisterRequest(
                email=OWNER_EMAIL, password=PASSWORD, name="Bench Owner"
            ),
            timeout=t,
        )
        access = bearer(owner.tokens.access_token)
        # A personal token scoped to what GetMe needs: the token auth checks its scopes too.
        cli = auth.CreateCliToken(
            auth_service_pb2.CreateCliTokenRequest(name="bench", scopes=["read"]),
            metadata=access,
            timeout=t,
        )
        created = orgs.CreateOrganization(
            organization_service_pb2.CreateOrganizationRequest(name="Bench", slug="bench-org"),
            metadata=access,
            timeout=t,
        )
        org_id = created.organization.id
        for n in range(1, MEMBERS):
            email = f"bench-member-{n:02d}@example.com"
            auth.Register(
                auth_service_pb2.RegisterRequest(
                    email=email, password=PASSWORD, name=f"Bench Member {n:02d}"
                ),
                timeout=t,
            )
            orgs.AddMember(
                organization_service_pb2.AddMemberRequest(
                    organization_id=org_id,
                    email=email,
                    role=organization_pb2.ORGANIZATION_ROLE_MEMBER,
                ),
                metadata=access,
                timeout=t,
            )

        get_me = auth_service_pb2.GetMeRequest()
        list_members = organization_service_pb2.ListMembersRequest(
            organization_id=org_id, page_size=MEMBERS
        )
        login = auth_service_pb2.LoginRequest(email=OWNER_EMAIL, password=PASSWORD)
        members = orgs.ListMembers(list_members, metadata=access, timeout=t)
        if len(members.members) != MEMBERS:
            raise RuntimeError(f"ListMembers returned {len(members.members)} members")
        cli_metadata = bearer(cli.token)
        getme_http = list_members_http = None
        if http_port:
            getme_http = http_call("getme_http", http_port, "/auth/me", access)
            list_members_http = http_call(
                "list_members_http",
                http_port,
                f"/organizations/{created.organization.slug}/members?pageSize={MEMBERS}",
                access,
            )
        return Workload(
            getme_access=GrpcCall(
                "getme_access",
                GET_ME,
                get_me.SerializeToString(),
                auth.GetMe(get_me, metadata=access, timeout=t).SerializeToString(),
                access,
            ),
            getme_cli=GrpcCall(
                "getme_cli",
                GET_ME,
                get_me.SerializeToString(),
                auth.GetMe(get_me, metadata=cli_metadata, timeout=t).SerializeToString(),
                cli_metadata,
            ),
            list_members=GrpcCall(
                "list_members",
                LIST_MEMBERS,
                list_members.SerializeToString(),
                members.SerializeToString(),
                access,
            ),
            login=GrpcCall(
                "login",
                LOGIN,
                login.SerializeToString(),
                auth.Login(login, timeout=t).SerializeToString(),
            ),
            getme_http=getme_http,
            list_members_http=list_members_http,
        )


def http_call(name: str, port: int, path: str, headers: tuple[tuple[str, str], ...]) -> HttpCall:
    """A GET through the gateway, made once to record the body every run must return."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers))
    # No proxy handler: an http_proxy in the environment must never capture loopback calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=RPC_TIMEOUT_SECONDS) as response:
        body: bytes = response.read()
    return HttpCall(name, path, body, headers)
