"""Payload models for the built-in job types.

Every built-in handler validates its payload with one of these models before any side
effect. Fields accept the seed's camelCase names (`olderThanDays`) and snake_case
(`older_than_days`); unknown fields are refused, so that a typo fails loudly instead of
being ignored. A bad payload becomes a `PermanentError` that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from haosq.errors import PermanentError

# RFC 5322 dot-atom local part (ASCII) and an LDH domain: no quoting, no comments, no display
# names, nothing a header or an SMTP command could be smuggled through.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")


class Payload(BaseModel):
    """Base of the payload models: camelCase or snake_case, no unknown fields, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


P = TypeVar("P", bound=Payload)


def parse_payload(model: type[P], payload: Mapping[str, Any]) -> P:
    """Validate `payload`; a bad one raises PermanentError naming the first bad field."""
    if not isinstance(payload, Mapping):
        raise PermanentError(f"invalid payload: expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        raise PermanentError(describe_validation_error(exc, dict(payload))) from None


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = field_path(first["loc"], data)
    message = ": " + first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = " is required"
    elif first["type"] == "extra_forbidden":
        message = " is not a known field"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    if not first["loc"]:  # a check across fields: its message names them
        return f"invalid payload: {first['msg'].removeprefix('Value error, ')}{more}"
    return f"invalid payload: field {where!r}{message}{more}"


def field_path(loc: tuple[Any, ...], data: Any = None) -> str:
    """('to', 1) -> 'to[1]'; ('recipients', 0, 'vars') -> 'recipients[0].vars'.

    Walks the input alongside, to leave out the names pydantic gives union branches (the
    tag of a tagged union, `function-after[...]`): they are not fields the user wrote."""
    path = ""
    current = data
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            current = current[part] if isinstance(current, list) and 0 <= part < len(current) else None
            continue
        branch = index + 1 < len(loc) and isinstance(current, dict) and part not in current
        if branch and part in current.values():
            continue  # the branch of a tagged union ("matrix" in {"provider": "matrix"})
        if str(part).startswith(("function-", "union[", "list[", "str", "dict[")):
            continue
        path += f".{part}" if path else str(part)
        current = current.get(part) if isinstance(current, dict) else None
    return path


def check_address(value: str) -> str:
    """A bare email address, validated strictly; raises ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be an email address string")
    address = value.strip()
    if len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise ValueError(f"{value!r} is not a valid email address (expected local@domain.tld)")
    local = address.rsplit("@", 1)[0]
    if len(local) > 64:
        raise ValueError(f"{value!r} has a local part longer than 64 characters")
    return address


def check_header_text(value: str) -> str:
    """Header-safe text: no CR, LF or NUL (the usual header-injection vectors)."""
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("must not contain line breaks or NUL characters")
    return value
