"""Per-invocation state shared by the commands: options, the resolved address, the client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from luman.client import (
    Address,
    Client,
    NotLoggedIn,
    load_auth,
    resolve_address,
)

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Per-invocation settings and the lazily built client (`ctx.obj`)."""

    def __init__(
        self, api_url: str | None, as_json: bool, timeout: float, ca_cert: Path | None
    ) -> None:
        self.api_url = api_url
        self.as_json = as_json
        self.timeout = timeout
        self.ca_cert = ca_cert
        self._address: Address | None = None
        self._client: Client | None = None

    @property
    def address(self) -> Address:
        """--api-url, else LUMAN_API_URL, else the address saved at login, else localhost:3000."""
        if self._address is None:
            self._address = resolve_address(self.api_url)
        return self._address

    def root_certificates(self) -> bytes | None:
        return self.ca_cert.read_bytes() if self.ca_cert else None

    def client(self, *, authenticated: bool = True) -> Client:
        """The client for this invocation; with `authenticated`, it carries the saved token.

        Raises:
            NotLoggedIn: no saved login (before anything is contacted).
            AuthFileError: the saved login is unreadable.
        """
        token = None
        if authenticated:
            saved = load_auth()
            if saved is None:
                raise NotLoggedIn()
            token = saved.token
        if self._client is None:
            self._client = Client(
                self.address, timeout=self.timeout, root_certificates=self.root_certificates()
            )
        self._client.token = token
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # The group's callback has already run, so State exists when a subcommand parses.
    if value:
        state_of(ctx).as_json = True


def json_option(command: F) -> F:
    """`--json` after the subcommand, same as the global flag."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the result (and errors) as JSON.",
    )(command)


def state_of(ctx: click.Context) -> State:
    state = ctx.find_object(State)
    if state is None:
        raise RuntimeError("luman commands run under the `luman` group")
    return state
