"""Configuration of the built-in handlers: `[handlers.NAME]` tables and environment variables.

The environment wins over the config file, as everywhere in haosq:

    [handlers.smtp]
    url = "smtp://user:pass@mail.example.com:587?starttls=1"   # or HAOSQ_SMTP_URL
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from haosq.handlers.registry import JobContext


def handler_config(
    ctx: JobContext, name: str, env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The `[handlers.NAME]` table with `env` (key -> variable name) applied on top."""
    return with_environment(ctx.handler_settings(name), env or {}, environ)


def with_environment(
    table: Mapping[str, Any], env: Mapping[str, str], environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of `table` with each set variable of `env` (key -> variable name) on top."""
    merged = dict(table)
    environ = os.environ if environ is None else environ
    for key, variable in env.items():
        value = environ.get(variable)
        if value not in (None, ""):
            merged[key] = value
    return merged


def positive_number(table: Mapping[str, Any], key: str, default: float | None, where: str) -> float | None:
    from haosq.errors import ConfigError

    value = table.get(key, default)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[{where}] {key} = {value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"[{where}] {key} must be positive")
    return number
