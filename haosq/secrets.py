"""Masking of values that look secret, for everything haosq shows or stores.

Pure functions with no haosq imports, so that the CLI, the TUI, the daemon's logs and the
stored job errors can all call them. A key is secret when its name contains one of the
words below (case-insensitive, `_`/`-` separated or not: `api_key`, `X-Auth-Token`,
`smtpPassword`); a URL keeps everything but its password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

SECRET_WORDS = ("password", "passwd", "pwd", "token", "authorization", "secret", "key",
                "credential", "cookie", "private")

# Words that contain a secret word but name something harmless ("keyboard", "monkey").
_HARMLESS = re.compile(r"keyboard|monkey|turkey|hockey|donkey|jockey|whiskey", re.IGNORECASE)
_SECRET = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)

# scheme://user:password@host in free text (error messages, log lines).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?P<at>@)")
# key=value and "key": "value" pairs in free text whose key names a secret. Only secret keys
# match, so that "Error: password=x" is not swallowed by a harmless "Error:" pair.
_PAIR = re.compile(
    r"""(?P<key>["']?[A-Za-z0-9_.-]*(?:""" + "|".join(SECRET_WORDS) + r""")[A-Za-z0-9_.-]*["']?)"""
    r"""(?P<sep>\s*[:=]\s*)(?P<quote>["']?)"""
    r"""(?P<value>(?:Bearer\s+|Basic\s+)?[^\s"',;&}]+)""", re.IGNORECASE)


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a secret (password, token, authorization, secret, key, …)."""
    stripped = _HARMLESS.sub("", name)
    return bool(_SECRET.search(stripped))


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def mask_text(text: str) -> str:
    """Free text (an error message, a log line) with URL passwords and secret pairs masked."""
    masked = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)

    def pair(match: re.Match[str]) -> str:
        key = match["key"].strip("\"'")
        if not is_secret_key(key):
            return match[0]
        return f"{match['key']}{match['sep']}{match['quote']}{MASK}"

    return _PAIR.sub(pair, masked)


def mask_value(value: Any) -> Any:
    """A copy of a JSON-like value with secret keys' values replaced and URL passwords masked.

    Nested mappings and lists are walked; a secret key's value is replaced whole, whatever
    its type (a nested object under "credentials" is hidden entirely).
    """
    if isinstance(value, Mapping):
        return {
            key: (MASK if value[key] is not None and is_secret_key(str(key)) else mask_value(value[key]))
            for key in value
        }
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return mask_text(value)
    return value


def mask_job_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job as a mapping (CLI JSON, TUI detail) with payload, result and error masked."""
    masked = dict(row)
    for name in ("payload", "result"):
        if masked.get(name) is not None:
            masked[name] = mask_value(masked[name])
    if isinstance(masked.get("error"), str):
        masked["error"] = mask_text(masked["error"])
    return masked


class MaskingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's message (install it on a handler:
    `handler.addFilter(MaskingFilter())`), so that a URL with a password or a token in an
    exception message never reaches journald."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is formatted later from exc_info: format and mask it now.
            formatter = logging.Formatter()
            masked += "\n" + mask_text(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        return True
