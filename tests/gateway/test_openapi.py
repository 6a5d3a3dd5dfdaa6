"""GET /openapi.json: generated from the descriptors, valid OpenAPI 3.1, and true to the server
(a bounded schemathesis run against the live gateway finds no 5xx and no schema violation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from luman.server import methods
from luman.server.gateway import GatewayServer
from luman.server.gateway.comments import load_descriptor_set
from tests.gateway.helpers import access_token, bearer

Operation = APIOperation[Any, Any, Any, Any]

# Bounded: a few seconds per backend. derandomize=True makes every run send the same requests.
MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,  # every operation that declares bearer auth really refuses calls without it
]


@pytest.fixture
def document(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.shape_check
def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


@pytest.mark.shape_check
def test_every_annotated_rpc_has_its_path(document: dict[str, Any]) -> None:
    operations = {
        op["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    for service in methods.SERVICES:
        for method in service.methods:
            assert f"{service.name}_{method.name}" in operations, method.full_name
    assert operations["AuthService_Login"] == ("POST", "/auth/login")
    assert operations["OrganizationService_RemoveMember"] == (
        "DELETE",
        "/organizations/{slug}/members/{user_id}",
    )


@pytest.mark.shape_check
def test_public_rpcs_need_no_security_and_the_rest_bearer(document: dict[str, Any]) -> None:
    assert document["security"] == [{"bearerAuth": []}]
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    public = {
        op["operationId"]
        for item in document["paths"].values()
        for op in item.values()
        if op.get("security") == []
    }
    assert public == {
        "AuthService_Register",
        "AuthService_Login",
        "AuthService_RefreshToken",
        "AuthService_CliLogin",
        "AuthService_GetJwks",
        "AuthService_CreateServiceToken",
        "AuthService_StartDeviceLogin",
        "AuthService_PollDeviceLogin",
        "AuthService_VerifyEmail",
        "AuthService_RequestPasswordReset",
        "AuthService_ResetPassword",
        "AuthService_ListIdentityProviders",
        "AuthService_StartProviderLogin",
        "AuthService_CompleteProviderLogin",
        "AuthService_LinkProviderIdentity",
        "Health_Live",
        "Health_Ready",
    }


@pytest.mark.shape_check
def test_proto_comments_become_descriptions(document: dict[str, Any]) -> None:
    login = document["paths"]["/auth/login"]["post"]
    assert login["summary"].startswith("Login exchanges an email and password")
    assert "UNAUTHENTICATED" in login["description"]
    user = document["components"]["schemas"]["luman.auth.v1.User"]
    assert user["description"] == "User is a person with a Luman account."
    assert user["properties"]["createTime"]["format"] == "date-time"
    assert user["properties"]["email"]["description"].startswith("email is the user's")
    tags = {t["name"]: t.get("description", "") for t in document["tags"]}
    assert tags["AuthService"].startswith("AuthService registers users")


@pytest.mark.shape_check
def test_schemas_follow_the_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    role = schemas["luman.organization.v1.OrganizationRole"]
    assert role["type"] == "string"
    assert "ORGANIZATION_ROLE_OWNER" in role["enum"]
    cli_token = schemas["luman.auth.v1.CliToken"]
    # Always printed: fields without presence. Optional: message fields (lastUseTime).
    assert cli_token["required"] == ["id", "name", "scopes", "lastUseIp", "hint"]
    add_member = document["paths"]["/organizations/{slug}/members"]["post"]
    body = add_member["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"userId", "email", "role"}  # slug is in the path
    assert body["additionalProperties"] is False
    assert {"not": {"required": ["userId", "email"]}} in body["allOf"]
    list_members = document["paths"]["/organizations/{slug}/members"]["get"]
    assert [(p["name"], p["in"]) for p in list_members["parameters"]] == [
        ("slug", "path"),
        ("pageSize", "query"),
        ("pageToken", "query"),
    ]
    error = document["components"]["schemas"]["google.rpc.Status"]
    assert error["required"] == ["code", "message", "details"]


def test_descriptor_set_matches_the_generated_code() -> None:
    """descriptors.binpb (for comments) and the _pb2 modules come from the same protos: run
    `make proto` when this fails."""
    files = load_descriptor_set().file
    assert files, "generated/luman/api/v1/descriptors.binpb is missing: run `make proto`"
    for stored in files:
        compiled = descriptor_pb2.FileDescriptorProto()
        pool_file = methods.SERVICES[0].file.pool.FindFileByName(stored.name)
        pool_file.CopyToProto(compiled)
        without_comments = descriptor_pb2.FileDescriptorProto()
        without_comments.CopyFrom(stored)
        without_comments.ClearField("source_code_info")
        assert _without_json_names(without_comments) == _without_json_names(compiled), stored.name


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> bytes:
    # protoc writes the derived json_name into descriptor sets, not always into _pb2 modules.
    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for field in (*message.field, *message.extension):
            field.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in file.message_type:
        clear(message)
    for extension in file.extension:
        extension.ClearField("json_name")
    return file.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class Fuzz:
    base_url: str
    session: requests.Session
    operations: list[Operation]


@pytest.fixture
def fuzz(gateway: GatewayServer, http: httpx.Client, document: dict[str, Any]) -> Iterator[Fuzz]:
    """schemathesis pointed at the live gateway (loopback only), signed in as a user who owns
    an organization the fuzzer may guess ("fuzz")."""
    token = access_token(http)
    http.post("/organizations", json={"name": "Fuzz", "slug": "fuzz"}, headers=bearer(token))
    # The token goes in as OpenAPI-aware auth, so ignored_auth can take it away and retry.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": token}}}})
    schema = schemathesis.openapi.from_dict(document, config=config)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) == sum(len(item) for item in document["paths"].values())
    with requests.Session() as session:
        session.trust_env = False  # loopback only, whatever proxy the environment names
        yield Fuzz(f"http://127.0.0.1:{gateway.port}", session, operations)


def _exercise(
    fuzz: Fuzz, mode: GenerationMode, checks: list[CheckFunction], operations: list[Operation]
) -> None:
    for operation in operations:

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=fuzz.base_url, session=fuzz.session, checks=checks)

        exercise()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz: Fuzz) -> None:
    _exercise(fuzz, GenerationMode.POSITIVE, CHECKS, fuzz.operations)


def test_schemathesis_invalid_input_never_causes_a_server_error(
    fuzz: Fuzz, document: dict[str, Any]
) -> None:
    """Data that breaks the schema (wrong types, missing or extra fields, bad parameters)."""
    # Only operations with input can be sent input that breaks the schema.
    with_input = [
        operation
        for operation in fuzz.operations
        if {"parameters", "requestBody"} & set(document["paths"][operation.path][operation.method])
    ]
    assert len(with_input) >= 9
    _exercise(fuzz, GenerationMode.NEGATIVE, [not_a_server_error], with_input)
