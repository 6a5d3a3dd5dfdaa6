"""Sign-in with GitHub (an OAuth app; GitHub is not an OpenID Connect provider).

The web application flow with PKCE:
https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
then who signed in from the REST API:
https://docs.github.com/en/rest/users/users#get-the-authenticated-user
https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx

from luman.server.federation.errors import ProviderRejectedError, ProviderUnavailableError
from luman.server.federation.http import send, token_error
from luman.server.federation.identity import ProviderIdentity
from luman.server.federation.providers import ProviderConfig

API_VERSION = "2022-11-28"


class GitHubAdapter:
    """One GitHub (github.com or an Enterprise Server). Keeps no state: thread-safe."""

    def __init__(self, config: ProviderConfig, *, client: httpx.Client) -> None:
        self.config = config
        self._client = client

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        # GitHub has no ID token, so no nonce: state and PKCE bind the code to this sign-in.
        del nonce
        query = urllib.parse.urlencode(
            {
                "client_id": self.config.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            },
            quote_via=urllib.parse.quote,
        )
        return f"{self.config.github_url}/login/oauth/authorize?{query}"

    def identity(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> ProviderIdentity:
        del nonce
        token = self._exchange(code, redirect_uri, code_verifier)
        user = self._api(token, "/user")
        emails = self._api(token, "/user/emails?per_page=100")
        if not isinstance(user, dict) or not isinstance(emails, list):
            raise _invalid("/user is not an object or /user/emails not a list")
        user_id, login, name = user.get("id"), user.get("login"), user.get("name")
        if isinstance(user_id, bool) or not isinstance(user_id, int) or not isinstance(login, str):
            raise _invalid("/user has no numeric id or no login")
        email, verified = _chosen_email(emails)
        return ProviderIdentity(
            subject=str(user_id),
            email=email,
            email_verified=verified,
            name=name.strip() if isinstance(name, str) and name.strip() else login,
            username=login,
        )

    def _exchange(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        what = f"{self.config.id} access_token endpoint"
        reply = send(
            self._client,
            "POST",
            f"{self.config.github_url}/login/oauth/access_token",
            what=what,
            headers={"Accept": "application/json"},
            data={
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
        )
        if 400 <= reply.status < 500:
            raise token_error(reply, what, self.config.id)
        body = reply.json_object() if reply.status == 200 else None
        if body is None:
            raise _invalid(f"{what}: HTTP {reply.status}, not a JSON object")
        # GitHub answers 200 with an error object (bad_verification_code, redirect_uri_mismatch,
        # incorrect_client_credentials, ...).
        error = body.get("error")
        if isinstance(error, str):
            raise token_error(reply, what, self.config.id)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise _invalid(f"{what}: no access_token in the answer")
        return token

    def _api(self, token: str, path: str) -> Any:
        what = f"{self.config.id} API {path.split('?')[0]}"
        reply = send(
            self._client,
            "GET",
            self.config.github_api_url + path,
            what=what,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
            },
        )
        # A rate limit is answered 403 (or 429) with x-ratelimit-remaining: 0:
        # https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
        if reply.status == 403 and reply.headers.get("x-ratelimit-remaining") == "0":
            raise ProviderUnavailableError(f"{what}: rate limited")
        value = reply.json_value() if reply.status == 200 else None
        if value is None:
            raise _invalid(f"{what}: HTTP {reply.status}")
        return value


def _chosen_email(emails: list[Any]) -> tuple[str, bool]:
    """The primary address when verified; else the first verified one; else the primary,
    unverified; else none. No-reply addresses receive no mail and are never chosen."""
    entries = [
        entry
        for entry in emails
        if isinstance(entry, dict)
        and isinstance(entry.get("email"), str)
        and "@users.noreply." not in entry["email"].lower()
    ]
    primary = next((entry for entry in entries if entry.get("primary") is True), None)
    if primary is not None and primary.get("verified") is True:
        return primary["email"].lower(), True
    verified = next((entry for entry in entries if entry.get("verified") is True), None)
    if verified is not None:
        return verified["email"].lower(), True
    if primary is not None:
        return primary["email"].lower(), False
    return "", False


def _invalid(detail: str) -> ProviderRejectedError:
    return ProviderRejectedError("RESPONSE_INVALID", detail)
