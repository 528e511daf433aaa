"""SMTP delivery for the email handlers: configuration, one session, error classification.

Configured by `HAOSQ_SMTP_URL` (or `url` in `[handlers.smtp]`):

    smtp://user:pass@mail.example.com:587?starttls=1    plain connection upgraded with STARTTLS
    smtps://user:pass@mail.example.com                  TLS from the first byte (port 465)
    smtp://127.0.0.1:1025                               no TLS, no auth (a local relay)

Errors are sorted for the retry machinery: a 5xx reply is permanent (for the recipients it
names, or for the message), a 4xx reply and any connection problem are temporary.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from haosq.errors import ConfigError, PermanentError
from haosq.handlers.handler_config import handler_config, positive_number
from haosq.handlers.payloads import check_address
from haosq.handlers.registry import JobContext
from haosq.secrets import mask_url

SMTP_ENV = {
    "url": "HAOSQ_SMTP_URL",
    "from": "HAOSQ_SMTP_FROM",
    "ca_bundle": "HAOSQ_SMTP_CA_BUNDLE",
    "attachment_root": "HAOSQ_ATTACHMENT_ROOT",
    "rate_per_second": "HAOSQ_EMAIL_RATE_PER_SECOND",
    "rate_per_minute": "HAOSQ_EMAIL_RATE_PER_MINUTE",
}


class TemporarySmtpError(Exception):
    """A 4xx reply: the job is retried with backoff (not a PermanentError)."""


@dataclass(frozen=True)
class SmtpConfig:
    url: str
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    default_from: str | None
    timeout: float = 30.0
    ca_bundle: str | None = None
    local_hostname: str | None = None
    attachment_roots: tuple[str, ...] = ()
    max_attachment_bytes: int = 25 * 1024 * 1024
    rate_per_second: float | None = None
    rate_per_minute: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_context(cls, ctx: JobContext, environ: Mapping[str, str] | None = None) -> SmtpConfig:
        return cls.from_table(handler_config(ctx, "smtp", SMTP_ENV, environ))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SmtpConfig:
        url = table.get("url")
        if not url:
            raise ConfigError(
                "no SMTP server configured: set HAOSQ_SMTP_URL (e.g. smtp://user:pass@host:587?starttls=1) "
                "or url in [handlers.smtp]"
            )
        parts = urlsplit(str(url))
        shown = mask_url(str(url))
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigError(f"SMTP URL {shown}: the scheme must be smtp or smtps")
        if not parts.hostname:
            raise ConfigError(f"SMTP URL {shown}: no host")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "timeout", "local_hostname"}
        if unknown:
            raise ConfigError(f"SMTP URL {shown}: unknown parameter {sorted(unknown)[0]!r}")
        starttls = query.get("starttls", "0").lower() in ("1", "true", "yes", "on")
        implicit = parts.scheme == "smtps"
        if implicit and starttls:
            raise ConfigError(f"SMTP URL {shown}: smtps already uses TLS; drop starttls")
        default_from = table.get("from")
        if default_from:
            try:
                check_address(str(default_from))
            except ValueError as exc:
                raise ConfigError(f"[handlers.smtp] from: {exc}") from None
        roots = table.get("attachment_root") or table.get("attachment_roots") or ()
        if isinstance(roots, str):
            roots = tuple(r for r in roots.split(":") if r)
        try:
            port = parts.port or (465 if implicit else 25)
            timeout = float(query.get("timeout", table.get("timeout", 30.0)))
        except ValueError as exc:
            raise ConfigError(f"SMTP URL {shown}: {exc}") from None
        return cls(
            url=shown,
            host=parts.hostname,
            port=port,
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            default_from=str(default_from) if default_from else None,
            timeout=timeout,
            ca_bundle=str(table["ca_bundle"]) if table.get("ca_bundle") else None,
            local_hostname=query.get("local_hostname") or table.get("local_hostname"),
            attachment_roots=tuple(str(r) for r in roots),
            max_attachment_bytes=int(table.get("max_attachment_bytes", 25 * 1024 * 1024)),
            rate_per_second=positive_number(table, "rate_per_second", None, "handlers.smtp"),
            rate_per_minute=positive_number(table, "rate_per_minute", None, "handlers.smtp"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_bundle:
            context.load_verify_locations(cafile=self.ca_bundle)
        return context


@dataclass(frozen=True)
class Refusal:
    address: str
    code: int
    reason: str

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "code": self.code, "reason": self.reason}


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


def _reply_error(code: int, message: bytes | str, what: str) -> Exception:
    text = f"{what}: {code} {_text(message)}"
    return PermanentError(text) if code >= 500 else TemporarySmtpError(text)


class SmtpSession:
    """One SMTP connection, reused for every message of a job."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None

    def open(self) -> SmtpSession:
        config = self.config
        try:
            if config.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, local_hostname=config.local_hostname,
                    timeout=config.timeout, context=config.ssl_context(),
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, local_hostname=config.local_hostname,
                                    timeout=config.timeout)
            self._smtp = smtp
            smtp.ehlo()
            if config.starttls:
                if not smtp.has_extn("starttls"):
                    raise PermanentError(
                        f"{config.url}: the server does not offer STARTTLS, which the URL requires"
                    )
                smtp.starttls(context=config.ssl_context())
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            raise _reply_error(exc.smtp_code, exc.smtp_error, f"{config.url}: login refused") from None
        except smtplib.SMTPResponseException as exc:
            self.close()
            raise _reply_error(exc.smtp_code, exc.smtp_error, f"{config.url}: refused") from None
        except BaseException:
            self.close()
            raise
        return self

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> list[Refusal]:
        """Send to the explicit envelope; returns the recipients the server refused.

        Raises PermanentError / TemporarySmtpError when the message itself is refused, and
        connection errors as they come (all temporary)."""
        if self._smtp is None:
            self.open()
        assert self._smtp is not None
        try:
            refused = self._smtp.send_message(message, from_addr=sender, to_addrs=list(recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
        except smtplib.SMTPSenderRefused as exc:
            raise _reply_error(exc.smtp_code, exc.smtp_error, f"sender {sender} refused") from None
        except smtplib.SMTPDataError as exc:
            raise _reply_error(exc.smtp_code, exc.smtp_error, "message refused") from None
        except smtplib.SMTPServerDisconnected:
            self._smtp = None
            raise
        return [Refusal(address, int(code), _text(reason)) for address, (code, reason) in refused.items()]

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
