"""The zero-configuration path: no DATABASE_URL, an embedded PostgreSQL in the data directory."""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def test_embedded_server_is_started_shared_and_stopped(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAOSQ_", "JOB_QUEUE_")) and k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")}
    empty = tmp_path / "none.toml"
    empty.write_text("")
    env.update(HAOSQ_DATA_DIR=str(tmp_path / "data"), HAOSQ_CONFIG=str(empty))

    def haosq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "haosq", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    assert "stopped" in haosq("db", "status").stdout
    added = haosq("add", "demo:echo", "--payload", '{"value": 1}')
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added job 1 ")
    status = haosq("db", "status", "--json")
    assert '"embedded_running": true' in status.stdout
    # A second command reuses the running server and sees the first one's job.
    listed = haosq("jobs", "list", "--json")
    assert '"type": "demo:echo"' in listed.stdout
    url = haosq("db", "url")
    assert url.stdout.startswith("postgresql://postgres@/haosq?host=")
    stopped = haosq("db", "stop")
    assert stopped.stdout.strip() == "embedded server stopped"
    assert "stopped" in haosq("db", "status").stdout
    # Data survives a stop: the next command starts the server again.
    again = haosq("jobs", "list", "--json")
    assert '"type": "demo:echo"' in again.stdout
    haosq("db", "stop")
