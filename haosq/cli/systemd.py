"""`haosq systemd install|doctor`: the systemd units, written so that no one hand-edits them.

`haosq-worker@NAME.service` runs one worker group: NAME selects the job types (`email` runs
the email family, `all` runs every type) unless /etc/haosq/NAME.env says otherwise.
The unit is `Type=notify` (READY=1 once migrations, the pool and the first claim are done),
fed by the heartbeat through `WatchdogSec=`, stopped with SIGTERM and given the graceful
shutdown timeout plus a margin, and sandboxed to an exposure score near 1 in
`systemd-analyze security`. Credentials come in through `LoadCredential=` (a file only root
can read), never on a command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from haosq.cli.common import error_console, out, state
from haosq.errors import ConfigError
from haosq.tui.format import plain

systemd_app = typer.Typer(help="Install and check the systemd units of the worker daemon.",
                          no_args_is_help=True)

SERVICE = "haosq-worker@.service"
TARGET = "haosq-worker.target"
CREDENTIAL = "database-url"
DEFAULT_EXECUTABLE = "/usr/bin/haosq"
GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# The margin systemd grants beyond the daemon's own graceful shutdown timeout before SIGKILL.
STOP_MARGIN_SECONDS = 15
# Heartbeats the watchdog may miss before systemd restarts a stuck daemon.
WATCHDOG_HEARTBEATS = 4
MAX_EXPOSURE = 2.0


@dataclass(frozen=True)
class UnitOptions:
    executable: str = DEFAULT_EXECUTABLE
    user: bool = False
    shutdown_timeout_seconds: float = 30.0
    heartbeat_interval_ms: int = 30000

    @property
    def config_dir(self) -> str:
        # %E is $XDG_CONFIG_HOME for a user manager; the system manager reads /etc.
        return "%E/haosq" if self.user else "/etc/haosq"

    @property
    def stop_timeout(self) -> int:
        return int(self.shutdown_timeout_seconds + STOP_MARGIN_SECONDS)

    @property
    def watchdog(self) -> int:
        return max(60, int(self.heartbeat_interval_ms / 1000 * WATCHDOG_HEARTBEATS))


# Sandboxing shared by system and user units. A user manager cannot switch users, so
# DynamicUser= is system-only; PrivateUsers= gives a user unit the namespace in which the
# rest of the sandbox (and the empty capability set) can be applied.
_SANDBOX = """\
PrivateUsers=yes
CapabilityBoundingSet=
AmbientCapabilities=
KeyringMode=private
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native
DevicePolicy=closed
UMask=0077
"""

_SYSTEM_ONLY = """\
DynamicUser=yes
RemoveIPC=yes
"""


def render_service(options: UnitOptions) -> str:
    config = options.config_dir
    system_only = "" if options.user else _SYSTEM_ONLY
    wanted_by = TARGET
    return f"""\
# Written by `haosq systemd install`; change settings in {config}/%i.env or a drop-in
# (systemctl edit haosq-worker@NAME), not here.
[Unit]
Description=haosq worker %i
After=network-online.target postgresql.service
Wants=network-online.target
PartOf={TARGET}
# Keep retrying while the database is away instead of giving up after five quick failures.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
# The instance name is the worker group: [groups.NAME] of haosq.toml, or the job types its
# name says (email = the email family, all = every type).
Environment=HAOSQ_GROUP=%i
Environment=HAOSQ_SHUTDOWN_TIMEOUT={options.shutdown_timeout_seconds:g}
Environment=HAOSQ_DATA_DIR=%S/haosq
EnvironmentFile=-{config}/%i.env
# The database URL (with its password) as a credential: readable by this service only,
# never on a command line or in the environment of other processes.
LoadCredential={CREDENTIAL}:{config}/credentials/{CREDENTIAL}
ExecStart={options.executable} worker
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={options.stop_timeout}
WatchdogSec={options.watchdog}
Restart=on-failure
RestartSec=5
StateDirectory=haosq
{system_only}{_SANDBOX}
[Install]
WantedBy={wanted_by}
"""


def render_target(options: UnitOptions) -> str:
    wanted_by = "default.target" if options.user else "multi-user.target"
    return f"""\
# Written by `haosq systemd install`. Starts and stops every haosq-worker@ instance:
#   systemctl enable haosq-worker@email haosq-worker@all; systemctl start {TARGET}
[Unit]
Description=haosq workers (every haosq-worker@ instance)
After=network-online.target
Wants=network-online.target

[Install]
WantedBy={wanted_by}
"""


def render_env(group: str, types: str | None, concurrency: int | None) -> str:
    lines = [
        f"# haosq-worker@{group}: settings of this worker group (read by systemd, root only).",
        "# Every HAOSQ_* setting works here; `haosq config show` lists them with their sources.",
        "# The database URL does not belong here: it is the credential file credentials/database-url.",
        "",
        "# Job types or families this group runs (comma separated). Default: [groups.NAME] types",
        "# in haosq.toml, else the group's name ('all' runs every type). Add the family 'haosq'",
        "# to one group to deliver completion webhooks (haosq:webhook).",
        f"HAOSQ_TYPES={types}" if types else f"#HAOSQ_TYPES={group}",
        "# Worker threads.",
        f"HAOSQ_CONCURRENCY={concurrency or 4}",
        "# Fallback polling period in ms; set HAOSQ_LISTEN=false behind PgBouncer transaction pooling.",
        "#HAOSQ_POLL_INTERVAL=1000",
        "#HAOSQ_LISTEN=false",
        "# Prometheus metrics and /healthz (haosq worker --metrics-port).",
        "#HAOSQ_METRICS_PORT=9464",
        "#HAOSQ_LOG_LEVEL=info",
    ]
    return "\n".join(lines) + "\n"


def default_executable() -> str:
    """The haosq command of this installation (a virtualenv's, for example)."""
    found = shutil.which("haosq")
    if found:
        return str(Path(found).resolve())
    candidate = Path(sys.executable).with_name("haosq")
    return str(candidate) if candidate.exists() else DEFAULT_EXECUTABLE


def unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def config_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "haosq"
    return Path("/etc/haosq")


def _write(path: Path, text: str, mode: int, force: bool) -> str:
    if path.exists() and not force and path.read_text() != text:
        return f"kept {path} (it differs; --force replaces it)"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return f"wrote {path}"


@systemd_app.command("install")
def install(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="worker group: the instance name, e.g. email or all")] = "all",
    user: Annotated[bool, typer.Option("--user", help="a user unit (systemctl --user)")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="print the files instead of writing")] = False,
    types: Annotated[str | None, typer.Option(help="job types of the group (default: its name)")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="worker threads of the group")] = None,
    executable: Annotated[str | None, typer.Option(help="the haosq command ExecStart runs")] = None,
    units: Annotated[Path | None, typer.Option("--unit-dir", help="where units go")] = None,
    configs: Annotated[Path | None, typer.Option("--config-dir", help="where env files go")] = None,
    force: Annotated[bool, typer.Option(help="replace files that differ")] = False,
) -> None:
    """Write the worker units, the group's env file and the credential file."""
    if not GROUP_NAME.match(group):
        raise ConfigError(f"worker group {group!r}: use lowercase letters, digits, '.', '-' or '_'")
    settings = state(ctx).settings
    options = UnitOptions(
        executable=executable or default_executable(),
        user=user,
        shutdown_timeout_seconds=settings["worker.shutdown_timeout_seconds"],
        heartbeat_interval_ms=settings["worker.heartbeat_interval_ms"],
    )
    if not Path(options.executable).is_absolute():
        raise ConfigError(f"--executable {options.executable!r}: systemd needs an absolute path")
    units = units or unit_dir(user)
    configs = configs or config_dir(user)
    files = [
        (units / SERVICE, render_service(options), 0o644),
        (units / TARGET, render_target(options), 0o644),
        (configs / f"{group}.env", render_env(group, types, concurrency), 0o600),
    ]
    if print_only:
        for path, text, _mode in files:
            sys.stdout.write(f"# ---- {path}\n{text}\n")
        return
    for path, text, mode in files:
        out(_write(path, text, mode, force))
    credential = configs / "credentials" / CREDENTIAL
    if not credential.exists():
        credential.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        credential.parent.chmod(0o700)
        url = settings.database_url or ""
        out(_write(credential, url + "\n" if url else "", 0o600, False))
        if not url:
            error_console.print(plain(f"put the database URL into {credential} (mode 600)"))
    manager = "systemctl --user" if user else "systemctl"
    out(f"next: {manager} daemon-reload && {manager} enable --now haosq-worker@{group} {TARGET}")


def analyze(args: list[str], runtime_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if runtime_dir and not env.get("XDG_RUNTIME_DIR"):
        # --user lookups need a runtime directory even offline (no session over SSH or in CI).
        env["XDG_RUNTIME_DIR"] = runtime_dir
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def exposure_score(output: str) -> float | None:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    return float(match.group(1)) if match else None


def check_units(directory: Path, user: bool = False, instance: str = "all") -> list[str]:
    """Problems found by systemd-analyze in the installed units; empty when all is well."""
    service = directory / SERVICE
    target = directory / TARGET
    missing = [str(path) for path in (service, target) if not path.is_file()]
    if missing:
        return [f"missing unit file {name}" for name in missing]
    problems = []
    scope = ["--user"] if user else []
    with tempfile.TemporaryDirectory(prefix="haosq-units-") as tmp:
        # verify wants a concrete instance next to the target it refers to.
        concrete = Path(tmp) / f"haosq-worker@{instance}.service"
        shutil.copy(service, concrete)
        shutil.copy(target, Path(tmp) / TARGET)
        verified = analyze([*scope, "verify", str(concrete), str(Path(tmp) / TARGET)], tmp)
        if verified.returncode != 0 or verified.stderr.strip():
            problems.extend(f"verify: {line}" for line in
                            (verified.stderr or verified.stdout).strip().splitlines())
        security = analyze([*scope, "security", "--offline=yes", "--no-pager", str(concrete)], tmp)
        score = exposure_score(security.stdout + security.stderr)
        if score is None:
            problems.append("security: no exposure score in the output of systemd-analyze security")
        elif score > MAX_EXPOSURE:
            problems.append(f"security: exposure {score} is above {MAX_EXPOSURE}")
    return problems


@systemd_app.command("doctor")
def doctor(
    user: Annotated[bool, typer.Option("--user", help="check the user units")] = False,
    units: Annotated[Path | None, typer.Option("--unit-dir", help="where the units are")] = None,
) -> None:
    """Check the installed units with systemd-analyze (verify and security)."""
    directory = units or unit_dir(user)
    if shutil.which("systemd-analyze") is None:
        out("systemd-analyze is not installed: units not checked (apt-get install systemd)")
        return
    problems = check_units(directory, user)
    if problems:
        for problem in problems:
            error_console.print(plain(problem))
        raise ConfigError(f"{len(problems)} problem(s) with the units in {directory}")
    out(f"units in {directory}: verify ok, exposure <= {MAX_EXPOSURE}")


def register(app: typer.Typer) -> None:
    app.add_typer(systemd_app, name="systemd")
