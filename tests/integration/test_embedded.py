"""The zero-configuration path: no DATABASE_URL, an embedded PostgreSQL in the data directory."""

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.conftest import embedded_data_dir

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def test_embedded_server_is_started_shared_and_stopped(tmp_path):
    data = embedded_data_dir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAOSQ_", "JOB_QUEUE_")) and k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")}
    empty = tmp_path / "none.toml"
    empty.write_text("")
    env.update(HAOSQ_DATA_DIR=str(data), HAOSQ_CONFIG=str(empty))

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
    shutil.rmtree(data, ignore_errors=True)


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
CAN_RUN_AS_ANOTHER_USER = (
    os.geteuid() == 0
    and shutil.which("runuser") is not None
    and shutil.which("useradd") is not None
    and SYSTEM_PYTHON.exists()
    and _traversable_by_others(SITE_PACKAGES)
    and _traversable_by_others(REPO)
)


@pytest.mark.skipif(not CAN_RUN_AS_ANOTHER_USER,
                    reason="needs root, runuser/useradd, /usr/bin/python3 and a venv readable by others")
def test_embedded_server_as_an_ordinary_user_without_runtime_dir():
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    assert version == str(sys.version_info[:2]), "the system python must match the venv's version"
    user = "haosq-test-user"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", user], check=True)
    # pytest's own temporary directories are private to root: use one the user can reach.
    base = Path(tempfile.mkdtemp(prefix="haosq-user-test-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    shutil.chown(home, user)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": f"{REPO}:{SITE_PACKAGES}"}

    def haosq(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                   str(SYSTEM_PYTHON), "-m", "haosq", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    added = haosq("add", "demo:echo", "--payload", "{}")
    assert added.returncode == 0, added.stderr
    data = home / ".local/share/haosq/pg"
    try:
        assert data.is_dir()
        assert data.stat().st_uid == home.stat().st_uid  # the server runs as the user, in their dir
    finally:
        assert haosq("db", "stop").stdout.strip() == "embedded server stopped"
        shutil.rmtree(base, ignore_errors=True)


def test_a_long_lived_process_restarts_a_server_stopped_under_it(throwaway_server):
    import psycopg

    throwaway_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(throwaway_server.url, connect_timeout=2).close()
    throwaway_server.start()  # same process: the wheel's cached handle must not fool it
    with psycopg.connect(throwaway_server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
