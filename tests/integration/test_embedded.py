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
    assert f'"embedded_data_dir": "{data}"' in status.stdout
    shown = haosq("db", "status").stdout
    assert f"data dir {data} (from HAOSQ_DATA_DIR)" in shown
    assert "embedded server: running (pid " in shown and ", started " in shown
    # A second command reuses the running server and sees the first one's job.
    listed = haosq("jobs", "list", "--json")
    assert '"type": "demo:echo"' in listed.stdout
    url = haosq("db", "url")
    assert url.stdout.startswith("postgresql://postgres@/haosq?host=")
    stopped = haosq("db", "stop")
    assert stopped.stdout.startswith("embedded server stopped (pid ")
    assert f"data dir {data} (from HAOSQ_DATA_DIR)" in stopped.stdout
    assert "embedded server: stopped" in haosq("db", "status").stdout
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
        assert haosq("db", "stop").stdout.startswith("embedded server stopped (pid ")
        shutil.rmtree(base, ignore_errors=True)


def test_a_long_lived_process_restarts_a_server_stopped_under_it(throwaway_server):
    import psycopg

    throwaway_server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(throwaway_server.url, connect_timeout=2).close()
    throwaway_server.start()  # same process: the wheel's cached handle must not fool it
    with psycopg.connect(throwaway_server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_demo_on_the_embedded_server_says_where_its_data_is_and_how_to_stop_it(tmp_path):
    data = embedded_data_dir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAOSQ_", "JOB_QUEUE_")) and k != "DATABASE_URL"}
    empty = tmp_path / "none.toml"
    empty.write_text("")
    env.update(HAOSQ_DATA_DIR=str(data), HAOSQ_CONFIG=str(empty))
    try:
        done = subprocess.run([sys.executable, "-m", "haosq", "demo", "--count", "2",
                               "--schedule-delay", "0"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        out = " ".join(done.stdout.split())
        assert f"the embedded PostgreSQL server, data in {data / 'pg'}" in out
        assert (f"The embedded server keeps running for the next haosq command (data in "
                f"{data / 'pg'}); stop it with: haosq db stop") in out
        running = subprocess.run([sys.executable, "-m", "haosq", "db", "status", "--json"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert '"embedded_running": true' in running.stdout  # it did keep running
    finally:
        subprocess.run([sys.executable, "-m", "haosq", "db", "stop"], env=env, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
