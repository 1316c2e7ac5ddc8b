"""What every connector shares: secrets by env-var name, and errors that never carry secrets."""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, SecretStr

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


def _is_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        # Never echo the value: someone may have pasted the secret itself here.
        raise ValueError(
            "this is not an environment variable name: secrets are never written in the "
            "policy file, only the NAME of the variable that holds them (e.g. OKTA_API_TOKEN)"
        )
    return value


EnvVarName = Annotated[str, AfterValidator(_is_env_name)]
"""A policy field that names the environment variable holding a secret."""


class ConnectorConfigError(Exception):
    """A connector cannot be built from its configuration; says which setting is wrong."""


def secret_from_env(name: str) -> SecretStr:
    """Read a secret named in the policy; a missing variable is a clear start-up error."""
    value = os.environ.get(name)
    if not value:
        raise ConnectorConfigError(f"environment variable {name} is not set (or empty)")
    return SecretStr(value)
