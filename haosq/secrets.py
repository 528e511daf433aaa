"""Masking of secrets in what haosq shows and exports, never in what it stores.

The CLI, the TUI, the worker's log lines, metrics and webhook bodies call these functions on
the way out; the database keeps the job's payload, result, error and logs as they were, so
that masking never destroys the evidence (`KeyError: 'rows'` stays `KeyError: 'rows'`).

Which key names are secret. A name is split into its words (snake_case, kebab-case,
camelCase, dotted: `smtpPassword` is smtp + password, `X-Auth-Token` is x + auth + token)
and judged by whole words, never by substrings of a longer word (`monkey`, `keyboard`,
`KeyError`, `tokenizer`, `passage` are not secret):

- secret wherever it appears: password, passwd, passphrase, secret, credential(s), cookie,
  authorization, and a word ending in one of them (`dbpassword`, `clientsecret`, `setcookie`);
- secret as the last word: token (`api_token`, `X-Auth-Token`; not `token_url`), auth
  (`basic_auth`; not `auth_method`), pass and pwd (`db_pass`), and key (`api_key`,
  `private_key`, `stripe_key`), except after a word that names a database or lookup key
  (`primary_key`, `sort_key`, `dedupe_key`, `public_key`, ... in HARMLESS_KEY_QUALIFIERS);
- joined words: apikey, authtoken, accesstoken, privatekey, secretkey, accesskey, ...;
- `key` alone is not secret (an S3 object key, a cache key), nor a name where key is not the
  last word (`primary_key_id`, `key_id`, `keyspace`).

A secret key's value is masked whole in structured data (payload, result, log metadata,
configuration). Free text (errors, log lines, tracebacks) is masked only where it says which
part is secret: URL passwords (`scheme://user:***@host`, also malformed ones), `key=value`,
`key: value`, `"key": "value"` pairs whose key is a secret name (quoted values whole), the
rest of an `Authorization:` or `Cookie:` header line, and the literal text of secrets this
process was told about (`remember_secret`: the configured database password, which a driver
error may quote on its own). The source lines a traceback quotes are code: their
expressions stay as they are (`password = settings["password"]`), their string literals are
masked like data (`Client(api_key="***")`).
"""

from __future__ import annotations

import io
import logging
import re
import threading
import tokenize
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

STRONG_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "secrets", "credential",
                          "credentials", "cookie", "cookies", "authorization"})
LAST_WORDS = frozenset({"token", "auth", "pass", "pwd", "key"})
JOINED_WORDS = frozenset({"apikey", "authtoken", "accesstoken", "refreshtoken", "idtoken",
                          "sessiontoken", "bearertoken", "csrftoken", "privatekey", "secretkey",
                          "accesskey", "signingkey", "authkey", "masterkey", "encryptionkey"})
# Words before a final "key" that make it a database, lookup or public key, not a secret.
HARMLESS_KEY_QUALIFIERS = frozenset({
    "primary", "foreign", "sort", "partition", "shard", "dedupe", "dedup", "unique",
    "idempotency", "cache", "object", "s3", "storage", "bucket", "file", "routing", "row",
    "lookup", "group", "hash", "map", "join", "index", "natural", "composite", "surrogate",
    "public", "pub", "unit", "sequence", "lock", "event", "message", "job", "schedule",
})

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def key_words(name: str) -> list[str]:
    """The words of a key name, lowercased: `X-Auth-Token` -> x, auth, token."""
    return [word.lower() for word in _WORD.findall(name)]


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a secret (see the module's rules)."""
    words = [w for w in key_words(name) if not w.isdigit()]
    if not words:
        return False
    for word in words:
        if word in STRONG_WORDS or word in JOINED_WORDS:
            return True
        if any(word.endswith(strong) for strong in STRONG_WORDS if strong != "secrets"):
            return True
    last = words[-1]
    if last not in LAST_WORDS:
        return False
    if last == "key":
        return len(words) > 1 and words[-2] not in HARMLESS_KEY_QUALIFIERS
    return True


# -- secrets this process knows ---------------------------------------------------------

_remembered: set[str] = set()
_remembered_lock = threading.Lock()
# Shorter values would mask ordinary words and digits everywhere.
MIN_REMEMBERED_LENGTH = 4


def remember_secret(value: str | None) -> None:
    """Mask this literal text in every message from now on (a password a driver may quote)."""
    if not value:
        return
    candidates = {value, unquote(value), *value.split("@")}
    with _remembered_lock:
        _remembered.update(c for c in candidates if len(c) >= MIN_REMEMBERED_LENGTH)


def remember_conninfo(conninfo: str | None) -> None:
    """Remember the passwords of a database URL or keyword conninfo, in whatever form."""
    for password in conninfo_passwords(conninfo or ""):
        remember_secret(password)


def forget_secrets() -> None:
    with _remembered_lock:
        _remembered.clear()


def _mask_remembered(text: str) -> str:
    if not _remembered:
        return text
    with _remembered_lock:
        known = sorted(_remembered, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


# -- database URLs and conninfo strings ---------------------------------------------------

_KEYWORD_PASSWORD = re.compile(r"""\bpassword\s*=\s*(?:'((?:[^'\\]|\\.)*)'?|([^\s&]+))""")


def _url_userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of `scheme://user:password@host...` lies in `url`, by the rules
    that also hold for malformed URLs: the authority runs to the last '@' before the query."""
    start = url.find("//")
    if start < 0:
        return None
    start += 2
    end = len(url)
    for stop in ("?", "#"):
        found = url.find(stop, start)
        if found >= 0:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0 or colon + 1 == at:
        return None
    return colon + 1, at


def conninfo_passwords(conninfo: str) -> list[str]:
    """The passwords in a database URL (`user:password@`, `?password=`) or a `key=value`
    conninfo, malformed or not."""
    found = [quoted or bare for quoted, bare in _KEYWORD_PASSWORD.findall(conninfo)]
    span = _url_userinfo(conninfo) if "//" in conninfo else None
    if span:
        found.append(conninfo[span[0]:span[1]])
    return [password for password in found if password]


def mask_url(url: str) -> str:
    """A database or service URL (`scheme://user:password@host/...`, malformed or not) or a
    keyword conninfo (`host=db password='s3 cret'`) with its password replaced by ***."""
    if "//" in url:
        span = _url_userinfo(url)
        if span:
            url = f"{url[:span[0]]}{MASK}{url[span[1]:]}"
    return mask_text(url)


# -- free text ------------------------------------------------------------------------------

# user:password@ after `scheme://` or a bare `//` (a URL with a mangled scheme, as a driver
# quotes it back). The password may not contain '/', so that `host:port/path?to=a@b` keeps
# its port and path.
_TEXT_URL_PASSWORD = re.compile(r"(?P<head>//[^\s:/@'\"]*:)(?P<pw>[^\s/'\"]*[^\s@/'\"])(?P<at>@)")
_HEADER_LINE = re.compile(r"(?im)^(?P<head>[ \t]*(?:proxy-)?(?:authorization|set-cookie|cookie)[ \t]*:[ \t]*)"
                          r"(?P<value>\S.*)$")
# key=value, key: value, "key": "value" and 'key': 'value': a key and its separator; the
# value that follows is read only when the key is a secret name, so that a harmless pair never
# swallows a secret one after it (`url: https://x/?token=...`).
_KEY_SEP = re.compile(r"""(?<![\w./-])(?P<key>["']?[A-Za-z_][A-Za-z0-9_.-]*["']?)"""
                      r"""(?P<sep>[ \t]*[:=](?!//)[ \t]*)""")
_QUOTED = {quote: re.compile(rf"(?:\\.|[^{quote}\\])*") for quote in "\"'"}
_BARE = re.compile(r"""(?P<scheme>(?:Bearer|Basic|Token|Digest)[ \t]+)?[^\s"',;&}\])]+""")
_UNMASKED_VALUES = frozenset({"null", "None", "true", "false", "True", "False"})
_TRACEBACK_FRAME = re.compile(r'^\s*File "[^"]*", line \d+')


def _mask_data_line(line: str) -> str:
    if "=" not in line and ":" not in line:
        return line
    parts: list[str] = []
    done = 0
    for pair in _KEY_SEP.finditer(line):
        if pair.start() < done or not is_secret_key(pair["key"].strip("\"'")):
            continue
        start = pair.end()
        quote = line[start:start + 1]
        if quote in _QUOTED:
            value = _QUOTED[quote].match(line, start + 1)
            assert value is not None
            end = value.end() + (line[value.end():value.end() + 1] == quote)
            if value[0] in _UNMASKED_VALUES:
                continue
            closing = quote if line[end - 1:end] == quote and end - 1 > start else ""
            parts += [line[done:start], quote, MASK, closing]
        else:
            bare = _BARE.match(line, start)
            if bare is None or bare[0] in _UNMASKED_VALUES or bare[0].startswith(("{", "[")):
                continue
            end = bare.end()
            parts += [line[done:start], bare["scheme"] or "", MASK]
        done = end
    if not parts:
        return line
    parts.append(line[done:])
    return "".join(parts)


def _mask_urls(text: str) -> str:
    return _TEXT_URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)


def mask_text(text: str) -> str:
    """Free text (an error message, a traceback, a log line) with its secrets masked."""
    if not text:
        return text
    text = _mask_remembered(_mask_urls(text))
    if "=" not in text and ":" not in text:
        return text
    text = _HEADER_LINE.sub(lambda m: f"{m['head']}{MASK}", text)
    lines = text.split("\n")
    after_frame = False
    for index, line in enumerate(lines):
        if after_frame and line.startswith("    "):
            lines[index] = _mask_code_line(line)  # the source line a traceback quotes
            after_frame = False
            continue
        after_frame = bool(_TRACEBACK_FRAME.match(line))
        if not after_frame:
            lines[index] = _mask_data_line(line)
    return "\n".join(lines)


def _mask_code_line(line: str) -> str:
    """A line of Python source: its expressions are code (`password = settings["password"]`
    stays), its string literals are data (`login(password="hunter2")` does not)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return _mask_data_line(line)
    indent = line[:len(line) - len(line.lstrip())]
    code = line.strip()
    parts: list[str] = []
    done = 0
    significant = [t for t in tokens if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    for position, token in enumerate(significant):
        if token.type != tokenize.STRING:
            continue
        before = significant[position - 2:position]
        named = (len(before) == 2 and before[1].string in ("=", ":")
                 and is_secret_key(before[0].string.strip("\"'")))
        literal = token.string
        quote_at = min(i for i in (literal.find("'"), literal.find('"')) if i >= 0)
        quote = literal[quote_at:quote_at + 3] if literal[quote_at:quote_at + 3] in ('"""', "'''") \
            else literal[quote_at]
        body = literal[quote_at + len(quote):len(literal) - len(quote)]
        masked = MASK if named and body else _mask_data_line(body)
        start, end = token.start[1], token.end[1]
        parts += [code[done:start], literal[:quote_at + len(quote)], masked, quote]
        done = end
    if not parts:
        return line
    parts.append(code[done:])
    return indent + "".join(parts) + line[len(line.rstrip()):]


# -- structured data ------------------------------------------------------------------------


def mask_value(value: Any) -> Any:
    """A copy of a JSON-like value with secret keys' values replaced and secrets in its
    strings masked.

    Nested mappings and lists are walked; a secret key's value is replaced whole, whatever
    its type (a nested object under "credentials" is hidden entirely)."""
    if isinstance(value, Mapping):
        return {
            key: (MASK if value[key] is not None and is_secret_key(str(key)) else mask_value(value[key]))
            for key in value
        }
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    if isinstance(value, str):
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
