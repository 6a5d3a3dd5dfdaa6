"""MAX_TOKEN_LIFETIME: the cap on personal-token lifetimes, validated at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from luman.server.config import ConfigError, Settings


def test_max_token_lifetime_defaults_to_no_cap(tmp_path: Path) -> None:
    env = {"LUMAN_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).max_token_lifetime == 0
    assert Settings.from_env({**env, "MAX_TOKEN_LIFETIME": "30d"}).max_token_lifetime == 30 * 86400
    assert Settings.from_env({**env, "MAX_TOKEN_LIFETIME": "12h"}).max_token_lifetime == 12 * 3600


@pytest.mark.parametrize("value", ["soon", "-1d", "30 days", "3651d"])
def test_bad_max_token_lifetime_names_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LUMAN_DATA_DIR": str(tmp_path), "MAX_TOKEN_LIFETIME": value})
    assert str(caught.value).startswith("MAX_TOKEN_LIFETIME")
