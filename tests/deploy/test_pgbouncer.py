"""A worker with --no-listen drains jobs through a real PgBouncer in transaction pooling mode
(Debian's pgbouncer, started by the test in front of the test server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from haosq.queue import JobQueue
from tests.deploy.test_daemon_deploy import Daemon

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"

pytestmark = pytest.mark.skipif(not os.path.exists(PGBOUNCER),
                                reason="pgbouncer missing: .ci/system-deps installs it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def pgbouncer(database_url):
    """PgBouncer in transaction mode in front of the test database; yields its URL."""
    target = conninfo_to_dict(database_url)
    if target.get("host", "127.0.0.1") not in ("127.0.0.1", "localhost"):
        pytest.skip("PgBouncer test needs a TCP server on 127.0.0.1")
    port = free_port()
    user = target.get("user", "postgres")
    # Its own directory under /tmp: when the test runs as root, pgbouncer runs as postgres and
    # cannot enter pytest's private temporary directories.
    home = Path(tempfile.mkdtemp(prefix="haosq-pgbouncer-"))
    (home / "users.txt").write_text(f'"{user}" ""\n')
    (home / "pgbouncer.ini").write_text(f"""[databases]
* = host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
""")
    args = [PGBOUNCER, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(home, "postgres")
        for child in home.iterdir():
            shutil.chown(child, "postgres")
        args[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = make_conninfo(database_url, host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (home / "pgbouncer.log").read_text() if (home / "pgbouncer.log").exists() else ""
                proc.kill()
                raise AssertionError(f"pgbouncer did not start: {proc.stderr.read()!r} {log}") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(home, ignore_errors=True)


def test_enqueue_and_drain_through_transaction_pooling(pgbouncer, cli_env, make_settings, tmp_path, conn):
    producer = make_settings(HAOSQ_DATABASE_URL=pgbouncer, HAOSQ_PREPARED_STATEMENTS="false")
    with JobQueue(settings=producer) as queue:
        ids = [queue.add("demo:echo", {"n": n}).id for n in range(20)]
        queue.add_many([{"type": "demo:echo", "payload": {"n": n}} for n in range(20, 40)])
    env = {**cli_env, "HAOSQ_DATABASE_URL": pgbouncer}
    daemon = Daemon(env, tmp_path / "worker.log", "--no-listen", "--types", "demo",
                    "--concurrency", "4", "--poll-interval", "50", "--heartbeat-interval", "300")
    try:
        deadline = time.monotonic() + 30
        while True:
            done = conn.execute("SELECT count(*) AS n FROM haosq.jobs WHERE status = 'completed'"
                                ).fetchone()["n"]
            if done == 40:
                break
            assert daemon.proc.poll() is None, daemon.output()
            assert time.monotonic() < deadline, f"{done}/40 completed\n{daemon.output()}"
            time.sleep(0.1)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.output()
    assert "prepared statement" not in daemon.output()
    row = conn.execute("SELECT result FROM haosq.jobs WHERE id = %s", (ids[0],)).fetchone()
    assert row["result"] == {"n": 0}
    # Registered, heartbeating and deregistered through PgBouncer as well.
    worker = conn.execute("SELECT status, jobs_processed FROM haosq.workers").fetchone()
    assert worker["status"] == "stopped"
