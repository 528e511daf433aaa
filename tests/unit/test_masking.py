"""Masking on display: real exception messages come through unchanged, secrets do not.

The first corpus is made of real errors, raised here: Python's own exceptions, psycopg's from a
real server, httpx's from a real HTTP peer, and whole tracebacks. Masking must leave every one
of them as it was (the old free-text masker turned `KeyError: 'rows'` into `KeyError: '***'`).
The second corpus holds secrets in every form haosq meets them; none may survive.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import traceback
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from haosq.secrets import (
    MASK,
    conninfo_passwords,
    forget_secrets,
    is_secret_key,
    mask_text,
    mask_url,
    mask_value,
    remember_conninfo,
)


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:  # the corpus wants whatever the action raises
        return exc
    raise AssertionError("the action did not raise")


def message(exc: BaseException) -> str:
    """The error as haosq stores it: type, message, then the whole traceback."""
    trace = "".join(traceback.format_exception(exc)).rstrip()
    return f"{type(exc).__name__}: {exc}\n\n{trace}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = int(self.path.strip("/").split("?")[0] or 200)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_peer() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def silent_peer() -> Iterator[str]:
    """Accepts connections and never answers: a read timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    listener.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def real_errors(database_url: str, http_peer: str, silent_peer: str) -> dict[str, BaseException]:
    rows: dict[str, int] = {}
    key = "api_key"
    errors: dict[str, BaseException] = {
        "KeyError": raised(lambda: rows["rows"]),
        "KeyError on a secret name": raised(lambda: rows[key]),
        "KeyError on password": raised(lambda: {"user": 1}["password"]),
        "AttributeError": raised(lambda: None.token),  # type: ignore[attr-defined]
        "AttributeError module": raised(lambda: json.secret_key),  # type: ignore[attr-defined]
        "TypeError": raised(lambda: len(5)),  # type: ignore[arg-type]
        "ValueError int": raised(lambda: int("token")),
        "JSONDecodeError": raised(lambda: json.loads('{"password" "x"}')),
        "UnicodeDecodeError": raised(lambda: b"\xff key=1".decode()),
        "ZeroDivisionError": raised(lambda: 1 / 0),
        "httpx 503": raised(lambda: httpx.get(f"{http_peer}/503").raise_for_status()),
        "httpx 401": raised(lambda: httpx.get(f"{http_peer}/401?page=2").raise_for_status()),
        "httpx ConnectError": raised(lambda: httpx.get(f"http://127.0.0.1:{closed_port()}/hook")),
        "httpx ReadTimeout": raised(lambda: httpx.get(silent_peer, timeout=0.2)),
        "psycopg refused": raised(lambda: psycopg.connect(
            f"postgresql://app@127.0.0.1:{closed_port()}/haosq", connect_timeout=2)),
        "psycopg unknown role": raised(lambda: psycopg.connect(
            psycopg.conninfo.make_conninfo(database_url, user="no_such_role_token"))),
        "psycopg bad option": raised(lambda: psycopg.connect("host=127.0.0.1 passwrd=x")),
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE accounts (email text PRIMARY KEY, api_key text)")
        conn.execute("INSERT INTO accounts VALUES ('a@example.com', 'k1')")
        errors["psycopg UndefinedColumn"] = raised(lambda: conn.execute("SELECT password FROM accounts"))
        errors["psycopg UniqueViolation"] = raised(
            lambda: conn.execute("INSERT INTO accounts VALUES ('a@example.com', 'k2')"))
        errors["psycopg bad JSON"] = raised(lambda: conn.execute("""SELECT '{"rows": }'::jsonb"""))
        errors["psycopg syntax"] = raised(lambda: conn.execute("SELECT key = FROM accounts"))
    return errors


def test_real_errors_and_their_tracebacks_come_through_unchanged(database_url, http_peer, silent_peer):
    forget_secrets()
    corpus = real_errors(database_url, http_peer, silent_peer)
    changed = {}
    for name, exc in corpus.items():
        text = message(exc)
        if mask_text(text) != text:
            changed[name] = (text, mask_text(text))
    assert not changed, "\n\n".join(f"{name}:\n{before}\n--- became ---\n{after}"
                                    for name, (before, after) in changed.items())
    assert message(corpus["KeyError"]).startswith("KeyError: 'rows'")


HAND_WRITTEN_UNCHANGED = [
    "KeyError: 'rows'",
    "KeyError: 'password'",
    "monkey=3 keyboard=us turkey: yes",
    "primary_key_id=42 dedupe_key=user-7 key=uploads/cat.jpg public_key=ssh-ed25519",
    "tokenizer=bpe max_tokens=100 token_type=bearer auth_method=plain",
    "FATAL:  password authentication failed for user \"app\"",
    "DETAIL:  Key (email)=(a@example.com) already exists.",
    "see https://example.com:8443/docs?to=a@example.com",
    "smtp://mail.example.com:587 refused the connection",
    "postgresql://postgres@/haosq?host=/tmp",
    "{'to': 'a@example.com', 'token': None}",
]


@pytest.mark.parametrize("text", HAND_WRITTEN_UNCHANGED)
def test_ordinary_text_is_left_alone(text):
    forget_secrets()
    assert mask_text(text) == text


SECRETS = [
    ("postgresql://app:s3cr3t-1@db:5432/haosq", "s3cr3t-1"),
    ("connection to postgresql://haosq:pa@ss-2@db/haosq failed", "pa@ss-2"),
    ("postgres//app:s3cr3t-3@127.0.0.1/haos", "s3cr3t-3"),
    ('in URI: "postgresql://app:s3cr3t-4@[::1/haos"', "s3cr3t-4"),
    ("host=db port=5432 user=app password=s3cr3t-5 dbname=x", "s3cr3t-5"),
    ("host=db password='s3 cr3t-6' dbname=x", "cr3t-6"),
    ("host=db password='s3 cr3t-7 dbname=x", "cr3t-7"),
    ("https://api.example.com/v1/send?token=tok-8&page=2", "tok-8"),
    ("retried with token=abc-9 and Authorization: Bearer xyz-9", "xyz-9"),
    ('payload {"smtpPassword": "hunter-10", "to": "a@example.com"}', "hunter-10"),
    ("{'password': 'two words-11', 'to': 'a'}", "words-11"),
    ("X-Auth-Token: tok-12", "tok-12"),
    ("Cookie: session=cookie-13; theme=dark", "cookie-13"),
    ("api_key=\"k-14\"; client_secret=c-14b", "k-14"),
    ("input_value={'user': 'bob', 'api_token': 'tok-15'}", "tok-15"),
    ("PGPASSWORD=pg-16 psql", "pg-16"),
    ("stripe_key=sk_live_17 db_pass=p-17", "sk_live_17"),
    ("webhook https://bob:hook-18@hooks.example.com/x", "hook-18"),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secrets_in_free_text_are_masked(text, secret):
    forget_secrets()
    masked = mask_text(text)
    assert secret not in masked and MASK in masked


SMTP_URL, SMTP_PASSWORD = "smtp://mailer:hunter2@mail.example.com", "hunter2"


def test_a_traceback_keeps_its_code_and_loses_its_secrets():
    def connect(url: str, password: str) -> None:
        raise ConnectionError("login refused: password=" + password + " for " + url)

    text = message(raised(lambda: connect(SMTP_URL, SMTP_PASSWORD)))
    masked = mask_text(text)
    assert "hunter2" not in masked
    # The quoted source line is code: left as it is.
    assert 'raise ConnectionError("login refused: password=" + password + " for " + url)' in masked
    assert masked.count("login refused: password=*** for smtp://mailer:***@mail.example.com") == 2


@pytest.mark.parametrize("url", [
    "postgresql://app:s3cr3t@127.0.0.1:notaport/haos",
    "postgresql://app:s3cr3t/x@127.0.0.1:5432/haos",
    "postgresql://app:s3cr3t@x@127.0.0.1:5432/haos",
    "postgresql://app:s3cr3t@[::1/haos",
    "postgresql://db/haos?user=app&password=s3cr3t",
    "host=db password=s3cr3t",
    "host=db password = 's3cr3t with spaces'",
    "host=db password='s3cr3t",
])
def test_database_urls_in_every_form_are_masked(url):
    forget_secrets()
    assert "s3cr3t" not in mask_url(url)
    assert any("s3cr3t" in found for found in conninfo_passwords(url))


@pytest.mark.parametrize("url", [
    "postgresql://app:s3%zzcret@127.0.0.1/haos",  # libpq quotes the bad password alone
    "postgresql://app:s3@cret77@127.0.0.1:5432/haos",  # libpq takes "cret77@..." for the host
])
def test_remembered_passwords_are_masked_where_a_driver_quotes_them_alone(url):
    forget_secrets()
    error = str(raised(lambda: psycopg.connect(url, connect_timeout=2)))
    password = conninfo_passwords(url)[0]
    leaked = [part for part in (password, *password.split("@")) if len(part) > 3 and part in error]
    assert leaked, error  # the driver's message gives (part of) the password away
    try:
        remember_conninfo(url)
        assert not any(part in mask_text(error) for part in leaked)
    finally:
        forget_secrets()
    assert mask_text("host 'cret77@127.0.0.1'") == "host 'cret77@127.0.0.1'"


@pytest.mark.parametrize("key", [
    "password", "smtp_password", "smtpPassword", "PGPASSWORD", "apiKey", "api-key", "X-Api-Key",
    "Authorization", "Proxy-Authorization", "X-Auth-Token", "access_token", "client_secret",
    "private_key", "secret_key", "stripe_key", "passwd", "db_pass", "cookie", "Set-Cookie",
    "credentials", "basic_auth", "apikey", "authToken", "password2"])
def test_secret_key_names(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "to", "subject", "KeyError", "keyboard_layout", "monkey", "turkey", "key", "key_id",
    "primary_key_id", "primary_key", "dedupe_key", "idempotency_key", "public_key", "sort_key",
    "tokenizer", "max_tokens", "token_url", "auth_method", "passage", "bypass", "rows", "path"])
def test_harmless_key_names(key):
    assert not is_secret_key(key)


def test_mask_value_masks_strings_anywhere_in_a_payload():
    payload = {"dsn": "host=db password=s3cr3t", "nested": [{"note": "token=t0k"}],
               "KeyError": "rows", "monkey": 1}
    masked = mask_value(payload)
    assert masked == {"dsn": "host=db password=***", "nested": [{"note": "token=***"}],
                      "KeyError": "rows", "monkey": 1}


@pytest.mark.parametrize(("line", "shown"), [
    ('    password = settings["password"]', '    password = settings["password"]'),
    ('    token = ctx.get("token") or default_token', '    token = ctx.get("token") or default_token'),
    ('    raise KeyError(key)', '    raise KeyError(key)'),
    ('    client = Client(api_key="sk_live_1", to="x")', '    client = Client(api_key="***", to="x")'),
    ('    raise RuntimeError("password=hunter2 rejected")',
     '    raise RuntimeError("password=*** rejected")'),
    ('    auth = {"token": "abc", "n": 1}', '    auth = {"token": "***", "n": 1}'),
])
def test_source_lines_in_tracebacks_mask_literals_not_expressions(line, shown):
    frame = '  File "/srv/app/jobs.py", line 12, in send'
    assert mask_text(f"Traceback (most recent call last):\n{frame}\n{line}\nKeyError: 'rows'") == (
        f"Traceback (most recent call last):\n{frame}\n{shown}\nKeyError: 'rows'")
