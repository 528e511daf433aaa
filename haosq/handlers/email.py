"""The `email:*` job types: send, batch and digest, over SMTP (see haosq.handlers.mailer).

- email:send    one message to one or many recipients
- email:batch   one templated message per recipient, rate-limited and checkpointed
- email:digest  pending digest items of a recipient, aggregated into one message

Every message is an `email.message.EmailMessage` (it refuses CR/LF in headers) and the
envelope recipients are passed explicitly, never parsed from headers. A retry never sends
again to a recipient the server already accepted: each acceptance is checkpointed at once.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Annotated, Any

import jinja2
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from haosq.errors import PermanentError
from haosq.handlers.digest_source import DigestBatch, claim_digest, finish_digest, pending_recipients
from haosq.handlers.htmltext import html_to_text
from haosq.handlers.mailer import Refusal, SmtpConfig, SmtpSession, TemporarySmtpError
from haosq.handlers.pathguard import Roots
from haosq.handlers.payloads import Payload, check_address, check_header_text, parse_payload
from haosq.handlers.ratelimit import RateLimiter
from haosq.handlers.registry import JobContext, handler
from haosq.handlers.templates import compile_template, render

EmailAddress = Annotated[str, AfterValidator(check_address)]
HeaderText = Annotated[str, AfterValidator(check_header_text), Field(max_length=998)]

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,76}")
# Headers the handler writes itself: a payload cannot override them through `headers`.
_RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "sender", "date", "message-id",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
    "return-path", "received",
}


class Mailbox(Payload):
    address: EmailAddress
    name: Annotated[str, AfterValidator(check_header_text), Field(max_length=200)] | None = None

    def header(self) -> Address:
        return Address(display_name=self.name or "", addr_spec=self.address)


def _mailboxes(value: Any) -> Any:
    """'a@x.org', {"address": ...}, or a list of either -> a list of mailbox dicts."""
    items = value if isinstance(value, list) else [value]
    return [{"address": item} if isinstance(item, str) else item for item in items]


Mailboxes = Annotated[list[Mailbox], BeforeValidator(_mailboxes)]


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set from its own field and cannot be given in headers")
    return headers


ExtraHeaders = Annotated[dict[str, HeaderText], AfterValidator(_check_headers)]


class Attachment(Payload):
    path: str
    filename: HeaderText | None = None
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$")] | None = None


def _attachments(value: Any) -> Any:
    return [{"path": item} if isinstance(item, str) else item for item in (value or [])]


class MessageFields(Payload):
    """What every email job has besides its recipients and content."""

    from_: Mailbox | None = Field(None, alias="from")
    reply_to: Mailboxes = Field(default_factory=list)
    headers: ExtraHeaders = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("from", "from_"):
                if isinstance(data.get(key), str):
                    data = {**data, key: {"address": data[key]}}
        return data


class SendEmail(MessageFields):
    to: Annotated[Mailboxes, Field(min_length=1)]
    cc: Mailboxes = Field(default_factory=list)
    bcc: Mailboxes = Field(default_factory=list)
    subject: HeaderText
    html: str | None = None
    text: str | None = None
    attachments: Annotated[list[Attachment], BeforeValidator(_attachments)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_body(self) -> SendEmail:
        if self.html is None and self.text is None:
            raise ValueError("field 'html' or 'text' is required (or both)")
        return self


class BatchRecipient(Payload):
    to: Annotated[Mailboxes, Field(min_length=1)]
    variables: dict[str, Any] = Field(default_factory=dict)


def _batch_recipients(value: Any) -> Any:
    """A recipient may be given as a bare address."""
    if not isinstance(value, list):
        return value
    return [{"to": item} if isinstance(item, str) else item for item in value]


class BatchEmail(MessageFields):
    recipients: Annotated[
        list[BatchRecipient], BeforeValidator(_batch_recipients), Field(min_length=1, max_length=100_000)
    ]
    subject: str
    html: str | None = None
    text: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    rate_per_minute: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _has_body(self) -> BatchEmail:
        if self.html is None and self.text is None:
            raise ValueError("field 'html' or 'text' is required (or both)")
        return self


DEFAULT_DIGEST_SUBJECT = "Your digest: {{ count }} new item{{ 's' if count != 1 else '' }}"
DEFAULT_DIGEST_HTML = """<h1>{{ count }} new item{{ 's' if count != 1 else '' }}</h1>
<ul>{% for item in items %}{% set text = item.get('text') or item.get('body') %}
<li>{% if item.get('url') %}<a href="{{ item.url }}">{{ item.get('title') or item.url }}</a>
{%- else %}{{ item.get('title', '') }}{% endif %}{% if text %}<p>{{ text }}</p>{% endif %}</li>{% endfor %}
</ul>"""


class DigestEmail(MessageFields):
    to: Annotated[Mailboxes, Field(min_length=1, max_length=1)] | None = None
    all_recipients: bool = False
    recipient: Annotated[str, Field(min_length=1)] | None = None
    channel: Annotated[str, Field(min_length=1)] = "email"
    items: list[dict[str, Any]] | None = None
    subject: str = DEFAULT_DIGEST_SUBJECT
    html: str | None = None
    text: str | None = None
    max_items: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_recipients: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    send_empty: bool = False
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    rate_per_minute: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> DigestEmail:
        if (self.to is None) == (not self.all_recipients):
            raise ValueError("field 'to' (one recipient) or 'allRecipients' (every recipient) is required")
        if self.all_recipients and (self.items is not None or self.recipient is not None):
            raise ValueError("fields 'items' and 'recipient' go with 'to', not with 'allRecipients'")
        return self


# -- messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttachedFile:
    """An attachment's bytes, read below an attachment root, and its file name there."""

    name: str
    data: bytes
    spec: Attachment


def read_attachment(spec: Attachment, config: SmtpConfig, field: str) -> AttachedFile:
    """The bytes of a regular file below a configured attachment root (opened by directory
    descriptor, no symlink followed); relative paths are looked up in each root in turn."""
    label = f"invalid payload: field {field!r}"
    if not config.attachment_roots:
        raise PermanentError(
            f"{label}: attachments are disabled (set attachment_root in [handlers.smtp] or "
            "HAOSQ_ATTACHMENT_ROOT)"
        )
    roots = Roots.of(config.attachment_roots, field=label, what="attachment root")
    with roots.open_file(spec.path) as opened:
        size = opened.info.st_size
        if size > config.max_attachment_bytes:
            raise PermanentError(
                f"{label}: {size} bytes is over the attachment limit of {config.max_attachment_bytes}")
        return AttachedFile(opened.name, opened.file.read(config.max_attachment_bytes + 1), spec)


def build_message(
    *,
    sender: Mailbox,
    to: Sequence[Mailbox],
    cc: Sequence[Mailbox] = (),
    reply_to: Sequence[Mailbox] = (),
    subject: str,
    html: str | None,
    text: str | None,
    headers: dict[str, str],
    attachments: Sequence[AttachedFile] = (),
    message_id: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender.header()
    message["To"] = tuple(m.header() for m in to)
    if cc:
        message["Cc"] = tuple(m.header() for m in cc)
    if reply_to:
        message["Reply-To"] = tuple(m.header() for m in reply_to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name] = value
    message.set_content(text if text is not None else html_to_text(html or ""))
    if html is not None:
        message.add_alternative(html, subtype="html")
    for attached in attachments:
        spec = attached.spec
        guessed = mimetypes.guess_type(attached.name)[0]
        content_type = spec.content_type or guessed or "application/octet-stream"
        maintype, subtype = content_type.split("/", 1)
        message.add_attachment(attached.data, maintype=maintype, subtype=subtype,
                               filename=spec.filename or attached.name)
    return message


def message_id(ctx: JobContext, sender: Mailbox, part: str = "") -> str:
    """Stable across retries, so that a receiving system can recognise a repeated message."""
    domain = sender.address.rsplit("@", 1)[1]
    return f"<haosq.{ctx.job_id}{'.' + part if part else ''}@{domain}>"


def sender_of(fields: MessageFields, config: SmtpConfig) -> Mailbox:
    if fields.from_ is not None:
        return fields.from_
    if config.default_from:
        return Mailbox(address=config.default_from)
    raise PermanentError(
        "invalid payload: field 'from' is required (no default sender: set from in [handlers.smtp] "
        "or HAOSQ_SMTP_FROM)"
    )


def envelope(*groups: Sequence[Mailbox]) -> list[str]:
    seen: dict[str, str] = {}
    for group in groups:
        for mailbox in group:
            seen.setdefault(mailbox.address.lower(), mailbox.address)
    return list(seen.values())


# -- email:send -----------------------------------------------------------------------------

@handler("email:send")
def send_email(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send one email to one or many recipients."""
    fields = parse_payload(SendEmail, payload)
    config = SmtpConfig.from_context(ctx)
    sender = sender_of(fields, config)
    files = [read_attachment(a, config, f"attachments[{i}]") for i, a in enumerate(fields.attachments)]
    message = build_message(
        sender=sender, to=fields.to, cc=fields.cc, reply_to=fields.reply_to, subject=fields.subject,
        html=fields.html, text=fields.text, headers=fields.headers, attachments=files,
        message_id=message_id(ctx, sender),
    )
    recipients = envelope(fields.to, fields.cc, fields.bcc)
    done = ctx.checkpoints()
    remaining = [r for r in recipients if f"rcpt:{r}" not in done]
    if remaining:
        ctx.log.info("sending email", recipients=len(remaining), subject=fields.subject)
        with SmtpSession(config) as session:
            refusals = session.send(message, sender.address, remaining)
        refused = {r.address.lower(): r for r in refusals}
        temporary = []
        for address in remaining:
            refusal = refused.get(address.lower())
            if refusal is None:
                ctx.checkpoint_done(f"rcpt:{address}", {"status": "sent"})
            elif refusal.permanent:
                ctx.checkpoint_done(f"rcpt:{address}", {"status": "failed", **refusal.as_json()})
                ctx.log.warn("recipient refused", **refusal.as_json())
            else:
                temporary.append(refusal)
        if temporary:
            raise TemporarySmtpError(
                "recipients deferred, retrying: "
                + ", ".join(f"{r.address} ({r.code} {r.reason})" for r in temporary)
            )
        done = ctx.checkpoints()
    sent = [r for r in recipients if done.get(f"rcpt:{r}", {}).get("status") == "sent"]
    failed = [
        {k: v for k, v in done[f"rcpt:{r}"].items() if k != "status"}
        for r in recipients if done.get(f"rcpt:{r}", {}).get("status") == "failed"
    ]
    if not sent:
        raise PermanentError(
            "every recipient was refused: "
            + ", ".join(f"{f['address']} ({f['code']} {f['reason']})" for f in failed)
        )
    return {"sent": sent, "failed": failed, "message_id": message["Message-ID"]}


# -- email:batch ----------------------------------------------------------------------------

@handler("email:batch")
def send_batch(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send one templated email per recipient, rate-limited, never twice to one recipient."""
    fields = parse_payload(BatchEmail, payload)
    config = SmtpConfig.from_context(ctx)
    sender = sender_of(fields, config)
    subject_t = compile_template(fields.subject, "subject", html=False)
    html_t = compile_template(fields.html, "html", html=True)
    text_t = compile_template(fields.text, "text", html=False)

    # Render every message before sending any: a template error fails the job untouched.
    messages = []
    for index, recipient in enumerate(fields.recipients):
        variables = {**fields.variables, **recipient.variables, "recipient": recipient.to[0].address}
        where = f"recipients[{index}]"
        subject = (render(subject_t, variables, f"{where}: subject") or "").strip()
        html = render(html_t, variables, f"{where}: html")
        text = render(text_t, variables, f"{where}: text")
        try:
            message = build_message(
                sender=sender, to=recipient.to, reply_to=fields.reply_to, subject=subject,
                html=html, text=text, headers=fields.headers,
                message_id=message_id(ctx, sender, str(index)),
            )
        except ValueError as exc:
            raise PermanentError(f"invalid payload: field {where!r}: {exc}") from None
        messages.append((index, envelope(recipient.to), message))

    limiter = RateLimiter(fields.rate_per_second or config.rate_per_second,
                          fields.rate_per_minute or config.rate_per_minute)
    done = ctx.checkpoints()
    deferred: list[str] = []
    pending = [m for m in messages if f"msg:{m[0]}" not in done]
    ctx.log.info("sending batch", total=len(messages), remaining=len(pending))
    with SmtpSession(config) as session:
        for index, recipients, message in pending:
            limiter.wait(ctx.cancelled)
            try:
                refusals = session.send(message, sender.address, recipients)
            except PermanentError as exc:
                record = {"status": "failed", "to": recipients, "reason": str(exc)}
                ctx.checkpoint_done(f"msg:{index}", record)
                continue
            except TemporarySmtpError as exc:
                deferred.append(f"{', '.join(recipients)}: {exc}")
                continue
            outcome = _batch_outcome(recipients, refusals)
            if outcome is None:
                deferred.append(", ".join(f"{r.address} ({r.code} {r.reason})" for r in refusals))
                continue
            ctx.checkpoint_done(f"msg:{index}", outcome)
    if deferred:
        raise TemporarySmtpError(f"{len(deferred)} message(s) deferred, retrying: " + "; ".join(deferred[:5]))
    done = ctx.checkpoints()
    sent, failed = [], []
    for index, recipients, _ in messages:
        record = done[f"msg:{index}"]
        if record["status"] == "sent":
            sent.append({"index": index, "to": recipients, "refused": record.get("refused", [])})
        else:
            failed.append({"index": index, "to": recipients, "reason": record["reason"]})
    if not sent:
        # Nothing went out: fail the job (visible as failed) instead of completing it quietly.
        reasons = "; ".join(f"{', '.join(f['to'])}: {f['reason']}" for f in failed[:5])
        raise PermanentError(f"no message of the batch was accepted ({len(failed)} refused): {reasons}")
    return {"sent": sent, "failed": failed, "total": len(messages)}


def _batch_outcome(recipients: list[str], refusals: list[Refusal]) -> dict[str, Any] | None:
    """The checkpoint for one batch message, or None when it should be tried again."""
    if len(refusals) < len(recipients):
        # Accepted for someone: never send it again, whatever happened to the others.
        return {"status": "sent", "to": recipients, "refused": [r.as_json() for r in refusals]}
    if all(r.permanent for r in refusals):
        return {"status": "failed", "to": recipients,
                "reason": "; ".join(f"{r.address}: {r.code} {r.reason}" for r in refusals)}
    return None


# -- email:digest ---------------------------------------------------------------------------

@handler("email:digest")
def send_digest(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send a recipient's pending digest items as one email (or every recipient's)."""
    fields = parse_payload(DigestEmail, payload)
    config = SmtpConfig.from_context(ctx)
    sender = sender_of(fields, config)
    html_source = fields.html or (None if fields.text else DEFAULT_DIGEST_HTML)
    templates = (compile_template(fields.subject, "subject", html=False),
                 compile_template(html_source, "html", html=True),
                 compile_template(fields.text, "text", html=False))
    with SmtpSession(config) as session:
        if fields.to is not None:
            to = fields.to[0]
            return _one_digest(ctx, fields, session, sender, templates, to, fields.recipient or to.address,
                               fields.items, "digest")
        return _every_digest(ctx, fields, session, sender, templates, config)


Templates = tuple[jinja2.Template | None, jinja2.Template | None, jinja2.Template | None]


def _one_digest(ctx: JobContext, fields: DigestEmail, session: SmtpSession, sender: Mailbox,
                templates: Templates, to: Mailbox, recipient: str, items: list[Any] | None,
                key: str) -> dict[str, Any]:
    batch: DigestBatch = claim_digest(ctx, recipient, fields.channel, items, fields.max_items, key=key)
    if batch.already_sent is not None:
        return batch.already_sent
    if not batch.items and not fields.send_empty:
        return {"sent": False, "items": 0, "recipient": recipient, "channel": fields.channel}
    subject_t, html_t, text_t = templates
    variables = {"items": batch.items, "count": len(batch.items), "recipient": recipient}
    subject = (render(subject_t, variables, "subject") or "").strip()
    try:
        message = build_message(
            sender=sender, to=[to], reply_to=fields.reply_to, subject=subject,
            html=render(html_t, variables, "html"), text=render(text_t, variables, "text"),
            headers=fields.headers, message_id=message_id(ctx, sender, key),
        )
    except ValueError as exc:
        raise PermanentError(f"invalid payload: {exc}") from None
    refusals = session.send(message, sender.address, [to.address])
    if refusals:
        refusal = refusals[0]
        if not refusal.permanent:
            raise TemporarySmtpError(f"{refusal.address} deferred: {refusal.code} {refusal.reason}")
        raise PermanentError(f"{refusal.address} refused: {refusal.code} {refusal.reason}")
    result = {"sent": True, "items": len(batch.items), "recipient": recipient, "channel": fields.channel,
              "message_id": message["Message-ID"]}
    return finish_digest(ctx, batch, result, key=key)


def _every_digest(ctx: JobContext, fields: DigestEmail, session: SmtpSession, sender: Mailbox,
                  templates: Templates, config: SmtpConfig) -> dict[str, Any]:
    """One digest per recipient with pending items on the channel (recipients are addresses)."""
    limiter = RateLimiter(fields.rate_per_second or config.rate_per_second,
                          fields.rate_per_minute or config.rate_per_minute)
    done = ctx.checkpoints()
    recipients = pending_recipients(ctx, fields.channel, fields.max_recipients)
    # Recipients finished by an earlier attempt (their items are already marked sent).
    recipients = sorted(set(recipients) | {k.split(":", 1)[1] for k in done if k.startswith("digest:")})
    deferred: list[str] = []
    for recipient in recipients:
        key = f"digest:{recipient}"
        if key in done:
            continue
        try:
            to = Mailbox(address=recipient)
        except ValueError:
            ctx.checkpoint_done(key, {"result": {"sent": False, "recipient": recipient,
                                                 "reason": "not a valid email address"}})
            continue
        limiter.wait(ctx.cancelled)
        try:
            _one_digest(ctx, fields, session, sender, templates, to, recipient, None, key)
        except PermanentError as exc:
            ctx.checkpoint_done(key, {"result": {"sent": False, "recipient": recipient, "reason": str(exc)}})
        except TemporarySmtpError as exc:
            deferred.append(str(exc))
    if deferred:
        raise TemporarySmtpError(f"{len(deferred)} digest(s) deferred, retrying: " + "; ".join(deferred[:5]))
    done = ctx.checkpoints()
    results = [done[f"digest:{r}"]["result"] for r in recipients if f"digest:{r}" in done]
    sent = [r for r in results if r.get("sent")]
    failed = [{"recipient": r["recipient"], "reason": r["reason"]} for r in results if not r.get("sent")]
    return {"channel": fields.channel, "recipients": len(sent), "items": sum(r["items"] for r in sent),
            "failed": failed}
