"""Least-privilege roles, enforced by the real server (unique role names per test run)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from haosq.db.queries import roles as role_sql
from haosq.tui.data import PostgresSource

ROOT = Path(__file__).resolve().parents[2]
HAOSQ = str(Path(sys.executable).with_name("haosq"))


@pytest.fixture
def roles(database_url):
    """Roles with a unique prefix, plus one login role per kind."""
    prefix = f"hq{uuid.uuid4().hex[:8]}_"
    names = role_sql.RoleNames(prefix)
    logins = {kind: f"{prefix}{kind}_login" for kind in role_sql.ROLE_KINDS}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for login in logins.values():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        role_sql.create_roles(conn, names)
        for kind, login in logins.items():
            role_sql.grant_membership(conn, names, kind, login)
    urls = {kind: make_conninfo(database_url, user=login) for kind, login in logins.items()}
    yield names, urls
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in [*logins.values(), *names.all()]:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def test_producer_enqueues_but_cannot_read_payloads(roles, queue):
    _names, urls = roles
    secret = queue.add("email:send", {"to": "boss@example.com", "body": "salaries"})
    with connect(urls["producer"]) as conn:
        new_id = conn.execute("SELECT haosq.add_job('email:send', '{\"to\": \"a@example.com\"}')"
                              ).fetchone()[0]
        assert new_id > secret.id
        for statement in (f"SELECT payload FROM haosq.jobs WHERE id = {secret.id}",
                          "SELECT * FROM haosq.job_logs",
                          "INSERT INTO haosq.jobs (type) VALUES ('email:send')",
                          f"UPDATE haosq.jobs SET priority = 5 WHERE id = {secret.id}",
                          "DELETE FROM haosq.jobs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert queue.get(new_id).payload == {"to": "a@example.com"}


def test_viewer_reads_and_listens_but_changes_nothing(roles, queue, make_settings):
    _names, urls = roles
    job = queue.add("email:send", {"to": "a@example.com"})
    with connect(urls["viewer"]) as conn:
        for statement in (f"UPDATE haosq.jobs SET status = 'cancelled' WHERE id = {job.id}",
                          "SELECT haosq.add_job('email:send')",
                          "DELETE FROM haosq.jobs",
                          "INSERT INTO haosq.workers (token, worker_id, pid, hostname, concurrency) "
                          "VALUES (gen_random_uuid(), 'x', 1, 'h', 1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)

    # The TUI's data source in --read-only mode works as the viewer, LISTEN included.
    source = PostgresSource(make_settings(HAOSQ_DATABASE_URL=urls["viewer"]), read_only=True)
    try:
        dashboard = source.dashboard()
        assert dashboard.by_status["pending"] >= 1
        assert source.job(job.id).payload == {"to": "a@example.com"}
        heard, connected, stop = threading.Event(), threading.Event(), threading.Event()
        states: list[str | None] = []

        def on_state(error: str | None) -> None:
            states.append(error)
            if error is None:
                connected.set()

        listener = threading.Thread(target=source.listen, daemon=True,
                                    args=(lambda channel, payload: heard.set(), stop, on_state))
        listener.start()
        assert connected.wait(10), states
        queue.add("email:send", {})
        heard.wait(10)
        stop.set()
        listener.join(5)
        assert heard.is_set()
    finally:
        source.close()


def test_worker_role_runs_the_daemon(roles, queue, cli_env, tmp_path):
    _names, urls = roles
    job = queue.add("demo:echo", {"hello": "world"})
    env = {**cli_env, "HAOSQ_DATABASE_URL": urls["worker"]}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "haosq", "worker", "--types", "demo",
                                 "--poll-interval", "100", "--heartbeat-interval", "300"],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out)
        try:
            import time

            deadline = time.monotonic() + 20
            while queue.get(job.id).status.value != "completed":
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(20)
    assert proc.returncode == 0, log.read_text()
    with connect(urls["worker"]) as conn:
        for statement in ("CREATE TABLE haosq.intruder (id int)", "TRUNCATE haosq.jobs",
                          "DROP TABLE haosq.job_logs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_admin_can_do_everything_to_haosq(roles, queue):
    _names, urls = roles
    queue.add("email:send", {})
    with connect(urls["admin"]) as conn:
        conn.execute("CREATE TABLE haosq.admin_made (id int)")
        conn.execute("TRUNCATE haosq.jobs CASCADE")
        assert conn.execute("SELECT count(*) FROM haosq.jobs").fetchone()[0] == 0


def test_cli_creates_grants_and_is_idempotent(roles, cli_env, database_url):
    names, _urls = roles
    login = f"{names.prefix}cli_login"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    try:
        again = subprocess.run([HAOSQ, "roles", "create", "--prefix", names.prefix,
                                "--grant", f"viewer={login}"], env=cli_env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stderr
        assert f"granted {names.prefix}viewer to {login}" in again.stdout
        with psycopg.connect(make_conninfo(database_url, user=login), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM haosq.jobs").fetchone()[0] == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM haosq.jobs")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))
    printed = subprocess.run([HAOSQ, "roles", "create", "--print"], env=cli_env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert 'CREATE ROLE "haosq_producer" NOLOGIN' in printed.stdout
    assert "REVOKE EXECUTE ON FUNCTION haosq.add_job" in printed.stdout


def test_bad_prefix_and_grant_are_user_errors(cli_env):
    bad = subprocess.run([HAOSQ, "roles", "create", "--prefix", "Robert'); DROP", "--print"],
                         env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "role prefix" in bad.stderr
    grant = subprocess.run([HAOSQ, "roles", "create", "--grant", "root=bob", "--print"],
                           env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert grant.returncode == 2 and "KIND=LOGIN" in grant.stderr
