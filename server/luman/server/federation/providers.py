"""Which identity providers users may sign in with, read from the environment.

IDENTITY_PROVIDERS lists provider ids (`github,google,gitlab,corp`); each id then reads the
variables prefixed `IDP_<ID>_` (the id upper-cased, `-` written `_`):

    KIND               github, gitlab, google or oidc (default: the id when it is one of the
                       first three, else oidc)
    CLIENT_ID          required
    CLIENT_SECRET      required, unless CLIENT_SECRET_FILE names a file holding it
    NAME               the name on the sign-in button (default: GitHub, GitLab, Google, or the id)
    ISSUER             OIDC kinds: the issuer URL (google and gitlab have defaults; oidc needs it)
    SCOPES             space or comma separated (OIDC kinds must include openid)
    ALLOWED_DOMAINS    email domains that may sign in (default: any)
    GITHUB_URL         github kind: the web base, for GitHub Enterprise Server
    GITHUB_API_URL     github kind: the REST API base (default: https://api.github.com, or
                       GITHUB_URL + /api/v3 when GITHUB_URL is set)

URLs are https, or http to a loopback host (development and tests).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

KINDS = ("github", "gitlab", "google", "oidc")
OIDC_KINDS = frozenset({"gitlab", "google", "oidc"})

# A provider id: the URL segment of its pages (gateway/provider_pages.py) and the name stored
# with its identities.
PROVIDER_ID = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_SEPARATORS = re.compile(r"[\s,]+")

_DISPLAY_NAMES = {"github": "GitHub", "gitlab": "GitLab", "google": "Google"}
_DEFAULT_ISSUERS = {"google": "https://accounts.google.com", "gitlab": "https://gitlab.com"}
_GITHUB_SCOPES = ("read:user", "user:email")
_OIDC_SCOPES = ("openid", "email", "profile")


class ProviderConfigError(Exception):
    """A provider variable is missing or malformed; the message names the variable (and never
    repeats a secret)."""


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """One identity provider users may sign in with."""

    # ^[a-z][a-z0-9-]{0,31}$: the URL segment, and the provider name stored with identities.
    id: str
    kind: str  # "github" | "gitlab" | "google" | "oidc"
    display_name: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)  # never in repr() or a log line
    # OIDC kinds: compared exactly with the discovery document's and the ID tokens' `iss`
    # (OIDC Discovery 1.0 §4.3, OIDC Core §3.1.3.7), so kept as configured, trailing slash
    # included (Auth0's issuers end with one).
    issuer: str = ""
    github_url: str = "https://github.com"  # GitHub Enterprise Server, or a test's fake
    github_api_url: str = "https://api.github.com"
    scopes: tuple[str, ...] = ()
    allowed_domains: frozenset[str] = frozenset()  # lower-case; empty: any

    @property
    def is_oidc(self) -> bool:
        return self.kind in OIDC_KINDS

    def email_domain_allowed(self, email: str) -> bool:
        """Whether ALLOWED_DOMAINS lets `email` sign in (always, when the list is empty).

        Only meaningful for a verified address: the caller checks email_verified first.
        """
        if not self.allowed_domains:
            return True
        _, at, domain = email.rpartition("@")
        return bool(at) and domain.lower() in self.allowed_domains


def providers_from_env(env: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    """The providers IDENTITY_PROVIDERS lists, in its order; () when it is unset or empty.

    Raises:
        ProviderConfigError: naming the first bad variable.
    """
    ids = _split(env.get("IDENTITY_PROVIDERS", ""), separators=",")
    seen: set[str] = set()
    for provider_id in ids:
        if not PROVIDER_ID.match(provider_id):
            raise ProviderConfigError(
                f"IDENTITY_PROVIDERS: {provider_id!r} is not a provider id (a lower-case letter, "
                "then up to 31 lower-case letters, digits or '-')"
            )
        if provider_id in seen:
            raise ProviderConfigError(f"IDENTITY_PROVIDERS lists {provider_id!r} twice")
        seen.add(provider_id)
    return tuple(_provider(provider_id, env) for provider_id in ids)


def _provider(provider_id: str, env: Mapping[str, str]) -> ProviderConfig:
    prefix = "IDP_" + provider_id.upper().replace("-", "_") + "_"

    def get(name: str) -> str:
        return env.get(prefix + name, "").strip()

    kind = get("KIND").lower() or (provider_id if provider_id in _DISPLAY_NAMES else "oidc")
    if kind not in KINDS:
        raise ProviderConfigError(f"{prefix}KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    client_id = get("CLIENT_ID")
    if not client_id:
        raise ProviderConfigError(f"{prefix}CLIENT_ID is required for provider {provider_id!r}")
    client_secret = _client_secret(prefix, get("CLIENT_SECRET"), get("CLIENT_SECRET_FILE"))

    scopes = tuple(_split(get("SCOPES"))) or (
        _OIDC_SCOPES if kind in OIDC_KINDS else _GITHUB_SCOPES
    )
    issuer = ""
    github_url, github_api_url = "https://github.com", "https://api.github.com"
    if kind == "github":
        if get("ISSUER"):
            raise ProviderConfigError(f"{prefix}ISSUER is for OIDC providers, not kind github")
        github_url = _url(prefix + "GITHUB_URL", get("GITHUB_URL") or github_url)
        if github_url != "https://github.com":
            # GitHub Enterprise Server serves its REST API under /api/v3 of its own address:
            # defaulting to api.github.com would hand that server's tokens to github.com.
            github_api_url = github_url + "/api/v3"
        github_api_url = _url(prefix + "GITHUB_API_URL", get("GITHUB_API_URL") or github_api_url)
    else:
        for name in ("GITHUB_URL", "GITHUB_API_URL"):
            if get(name):
                raise ProviderConfigError(f"{prefix}{name} is for kind github, not {kind}")
        if "openid" not in scopes:
            raise ProviderConfigError(f"{prefix}SCOPES must include openid for an OIDC provider")
        issuer = get("ISSUER") or _DEFAULT_ISSUERS.get(kind, "")
        if not issuer:
            raise ProviderConfigError(f"{prefix}ISSUER is required for provider {provider_id!r}")
        _url(prefix + "ISSUER", issuer)  # checked, but kept as written: see ProviderConfig
    return ProviderConfig(
        id=provider_id,
        kind=kind,
        display_name=get("NAME") or _DISPLAY_NAMES.get(kind, provider_id),
        client_id=client_id,
        client_secret=client_secret,
        issuer=issuer,
        github_url=github_url,
        github_api_url=github_api_url,
        scopes=scopes,
        allowed_domains=_allowed_domains(prefix + "ALLOWED_DOMAINS", get("ALLOWED_DOMAINS")),
    )


def _client_secret(prefix: str, value: str, file_name: str) -> str:
    if value and file_name:
        raise ProviderConfigError(
            f"{prefix}CLIENT_SECRET and {prefix}CLIENT_SECRET_FILE are both set; set one"
        )
    if value:
        return value
    if not file_name:
        raise ProviderConfigError(
            f"{prefix}CLIENT_SECRET (or {prefix}CLIENT_SECRET_FILE) is required"
        )
    try:
        secret = Path(file_name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        # The reason (not found, permission denied), never the content.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ProviderConfigError(
            f"{prefix}CLIENT_SECRET_FILE: cannot read {file_name}: {reason}"
        ) from None
    if not secret:
        raise ProviderConfigError(f"{prefix}CLIENT_SECRET_FILE: {file_name} is empty")
    return secret


def _allowed_domains(variable: str, value: str) -> frozenset[str]:
    domains = set()
    for item in _split(value.lower()):
        domain = item.removeprefix("@")
        if not _DOMAIN.match(domain):
            raise ProviderConfigError(f"{variable}: {item!r} is not an email domain")
        domains.add(domain)
    return frozenset(domains)


def url_problem(value: str) -> str | None:
    """Why `value` may not be a provider URL, or None when it may.

    https, or http to a loopback host (127.0.0.0/8, ::1, localhost) for development and tests;
    no user information, query or fragment.
    """
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "is not a URL"
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if parts.scheme == "http" and not is_loopback(host):
        return "must be https:// (http:// only to a loopback host, for development)"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user or password"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "must not have a query or fragment"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(variable: str, value: str) -> str:
    problem = url_problem(value)
    if problem:
        # The value is left out: a mistyped URL can carry a password.
        raise ProviderConfigError(f"{variable} {problem}")
    return value.rstrip("/")


def _split(value: str, separators: str = "") -> list[str]:
    pattern = re.compile(r"\s*,\s*") if separators == "," else _SEPARATORS
    return [item for item in pattern.split(value.strip()) if item]
