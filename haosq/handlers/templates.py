"""Jinja2 templates for message handlers: sandboxed, strict about undefined variables.

HTML templates autoescape every variable; subject and text templates do not (they are not
HTML). Errors name the payload field the template came from.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from haosq.errors import PermanentError

_HTML_ENV = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined)
_TEXT_ENV = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def compile_template(source: str | None, field: str, *, html: bool) -> jinja2.Template | None:
    """The compiled template, None for None; a syntax error fails the job naming `field`."""
    if source is None:
        return None
    try:
        return (_HTML_ENV if html else _TEXT_ENV).from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise PermanentError(f"invalid payload: field {field!r} is not a valid template: {exc}") from None


def render(template: jinja2.Template | None, variables: dict[str, Any], field: str) -> str | None:
    if template is None:
        return None
    try:
        return template.render(**variables)
    except jinja2.TemplateError as exc:
        raise PermanentError(f"invalid payload: field {field!r}: template error: {exc}") from None
