from __future__ import annotations

from sqlalchemy.exc import IntegrityError


def violates(exc: IntegrityError, constraint: str) -> bool:
    """True when `exc` came from the named unique or primary-key constraint.

    PostgreSQL reports the constraint name; SQLite reports the columns, so the caller's
    constraint name (from the naming convention) is matched against either form.
    """
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name is not None:
        return bool(name == constraint)
    text = str(exc.orig)
    table_columns = _SQLITE_COLUMNS.get(constraint)
    return table_columns is not None and f"UNIQUE constraint failed: {table_columns}" in text


# SQLite names the columns of the violated constraint instead of the constraint itself.
_SQLITE_COLUMNS = {
    "uq_users_email": "users.email",
    "uq_organizations_slug": "organizations.slug",
    "uq_cli_tokens_token_hash": "cli_tokens.token_hash",
    "uq_identities_provider": "identities.provider, identities.issuer, identities.subject",
    "pk_memberships": "memberships.organization_id, memberships.user_id",
    "uq_invitations_organization_id_email_pending": (
        "invitations.organization_id, invitations.email"
    ),
}
