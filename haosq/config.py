"""Settings: built-in defaults < TOML file < environment < CLI flags.

Every value remembers where it came from, so that `haosq config show` can say so.
The primary environment names are `HAOSQ_*`; the seed's names (`DATABASE_URL`,
`JOB_QUEUE_*`) keep working, with the `HAOSQ_*` name winning when both are set.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from haosq.errors import ConfigError
from haosq.secrets import mask_url

SYSTEM_CONFIG = Path("/etc/haosq/haosq.toml")


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _type_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    # "all" (haosq-worker@all) and "*" mean every type, like an empty list.
    return () if names in (("all",), ("*",)) else names


@dataclass(frozen=True)
class Option:
    """One setting: its key in the TOML file, its environment names and how to parse it."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    env: tuple[str, ...] = ()
    secret: bool = False
    help: str = ""


OPTIONS: tuple[Option, ...] = (
    Option("database_url", _text, None, ("HAOSQ_DATABASE_URL", "DATABASE_URL"), secret=True,
           help="PostgreSQL URL; unset means the embedded server"),
    Option("data_dir", _text, None, ("HAOSQ_DATA_DIR",),
           help="where the embedded PostgreSQL keeps its data"),
    Option("pool_max_size", _positive_int, 10, ("HAOSQ_POOL_MAX_SIZE",),
           help="connections per producer process (the daemon sizes its own pool)"),
    Option("prepared_statements", _flag, True, ("HAOSQ_PREPARED_STATEMENTS",),
           help="server-side prepared statements; false behind PgBouncer transaction pooling "
                "(implied by worker.listen = false)"),
    Option("max_payload_bytes", _positive_int, 1024 * 1024, ("HAOSQ_MAX_PAYLOAD_BYTES",),
           help="largest accepted JSON payload"),
    Option("worker.concurrency", _positive_int, 1,
           ("HAOSQ_CONCURRENCY", "JOB_QUEUE_DEFAULT_CONCURRENCY"), help="worker threads"),
    Option("worker.types", _type_list, (), ("HAOSQ_TYPES",),
           help="job families or types this worker runs; empty means all"),
    Option("worker.poll_interval_ms", _positive_int, 1000,
           ("HAOSQ_POLL_INTERVAL", "JOB_QUEUE_POLL_INTERVAL"), help="fallback polling period"),
    Option("worker.heartbeat_interval_ms", _positive_int, 30000,
           ("HAOSQ_HEARTBEAT_INTERVAL", "JOB_QUEUE_HEARTBEAT_INTERVAL"),
           help="how often a worker proves it is alive"),
    Option("worker.stale_after_heartbeats", _positive_int, 2, ("HAOSQ_STALE_AFTER_HEARTBEATS",),
           help="missed heartbeats after which a worker's jobs are rescued"),
    Option("worker.max_attempts", _positive_int, 3,
           ("HAOSQ_MAX_ATTEMPTS", "JOB_QUEUE_MAX_ATTEMPTS"),
           help="attempts for jobs that do not set their own"),
    Option("worker.backoff_base_seconds", _non_negative_float, 2.0, ("HAOSQ_BACKOFF_BASE",),
           help="first retry delay; doubles per attempt"),
    Option("worker.backoff_cap_seconds", _non_negative_float, 3600.0, ("HAOSQ_BACKOFF_CAP",),
           help="longest retry delay"),
    Option("worker.shutdown_timeout_seconds", _non_negative_float, 30.0,
           ("HAOSQ_SHUTDOWN_TIMEOUT",), help="time running jobs get to finish on SIGTERM"),
    Option("worker.listen", _flag, True, ("HAOSQ_LISTEN",),
           help="wake on LISTEN/NOTIFY (false for PgBouncer transaction pooling)"),
    Option("worker.id", _text, None, ("HAOSQ_WORKER_ID",), help="defaults to hostname-pid"),
    Option("log_level", _text, "info", ("HAOSQ_LOG_LEVEL",), help="debug, info, warning, error"),
)

_BY_KEY = {option.key: option for option in OPTIONS}


def default_data_dir() -> Path:
    """Where the embedded server keeps its data: the user's data directory. Root's server
    runs as a system user of its own, which could not enter /root, so root's data lives under
    /var/lib; not in /var/lib/haosq, the StateDirectory= of the haosq-worker@ units, which
    systemd owns and hands to each unit's dynamic user."""
    if os.geteuid() == 0:
        return Path("/var/lib/haosq-embedded")
    return Path(platformdirs.user_data_dir("haosq"))


def _present(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def config_file_candidates(env: Mapping[str, str]) -> list[Path]:
    if env.get("HAOSQ_CONFIG"):
        return [Path(env["HAOSQ_CONFIG"])]
    return [Path(platformdirs.user_config_dir("haosq")) / "haosq.toml", SYSTEM_CONFIG]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in _BY_KEY:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


# Sections whose contents belong to other parts of haosq (handlers, schedules, groups):
# kept as they are and validated by their owners.
OPEN_SECTIONS = ("handlers", "schedules", "groups", "maintenance", "metrics", "webhooks")


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def database_url(self) -> str | None:
        return self.values["database_url"]

    @property
    def data_dir(self) -> Path:
        configured = self.values["data_dir"]
        return Path(configured) if configured else default_data_dir()

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with CLI flags applied (None means "not given")."""
        values = dict(self.values)
        sources = dict(self.sources)
        for key, raw in overrides.items():
            if raw is None:
                continue
            dotted = key if key in _BY_KEY else key.replace("__", ".")
            option = _BY_KEY.get(dotted)
            if option is None:
                raise ConfigError(f"unknown setting {dotted!r}")
            values[dotted] = _parse(option, raw, "command line")
            sources[dotted] = "command line"
        return Settings(values, sources, self.sections, self.config_file)

    def describe(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) rows: values typed as JSON has them (None, numbers, booleans,
        strings, lists), secrets masked."""
        rows = []
        for option in OPTIONS:
            value = self.values[option.key]
            if value is not None and option.secret:
                value = mask_url(str(value))
            elif isinstance(value, tuple):
                value = list(value)
            rows.append((option.key, value, self.sources[option.key]))
        return rows

    def describe_sections(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) rows of the open sections ([handlers.smtp], [[schedules]],
        …), one per leaf value, typed, with secret keys and URL passwords masked."""
        from haosq.secrets import MASK, is_secret_key, mask_value

        source = str(self.config_file) if self.config_file else "default"
        rows: list[tuple[str, Any, str]] = []

        def walk(path: str, value: Any) -> None:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if is_secret_key(str(key)) and not isinstance(item, Mapping | list):
                        rows.append((f"{path}.{key}", MASK, source))
                    else:
                        walk(f"{path}.{key}", item)
            elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
                for index, item in enumerate(value):
                    walk(f"{path}[{index}]", item)
            else:
                rows.append((path, mask_value(_plain_toml(value)), source))

        for section in OPEN_SECTIONS:
            if section in self.sections:
                walk(section, self.sections[section])
        return rows


def _plain_toml(value: Any) -> Any:
    """A TOML value as JSON can hold it (dates and times as their ISO text)."""
    if isinstance(value, list):
        return [_plain_toml(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _parse(option: Option, raw: Any, where: str) -> Any:
    try:
        return option.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {option.key} = {raw!r} is invalid: {exc}") from None


def load_settings(env: Mapping[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Read the settings from the first config file found and the environment."""
    env = os.environ if env is None else env
    values = {option.key: option.default for option in OPTIONS}
    sources = {option.key: "default" for option in OPTIONS}
    sections: dict[str, Any] = {}

    explicit = config_file or (Path(env["HAOSQ_CONFIG"]) if env.get("HAOSQ_CONFIG") else None)
    if explicit is not None and not explicit.exists():
        raise ConfigError(f"config file {explicit} does not exist (check --config / HAOSQ_CONFIG)")
    candidates = [explicit] if explicit else config_file_candidates(env)
    found = next((path for path in candidates if _present(path)), None)
    if found is not None:
        try:
            document = tomllib.loads(found.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {found}: {exc}") from None
        for section in OPEN_SECTIONS:
            if section in document:
                sections[section] = document.pop(section)
        for key, raw in _flatten(document).items():
            option = _BY_KEY.get(key)
            if option is None:
                raise ConfigError(f"{found}: unknown key {key!r}")
            values[key] = _parse(option, raw, str(found))
            sources[key] = str(found)

    if env.get("HAOSQ_GROUP"):
        _apply_group(env["HAOSQ_GROUP"], sections, found, values, sources)

    for option in OPTIONS:
        # The first name is the primary one; it wins over the seed's names.
        for name in option.env:
            if env.get(name) not in (None, ""):
                values[option.key] = _parse(option, env[name], f"environment {name}")
                sources[option.key] = f"env {name}"
                break
    if values["database_url"] is None:
        _database_url_from_file(env, values, sources)
    return Settings(values, sources, sections, found)


def group_options() -> dict[str, Option]:
    """The settings a [groups.NAME] table may give: the worker's, by their short names."""
    return {option.key.removeprefix("worker."): option for option in OPTIONS
            if option.key.startswith("worker.") and option.key != "worker.id"}


def _apply_group(group: str, sections: Mapping[str, Any], found: Path | None,
                 values: dict[str, Any], sources: dict[str, str]) -> None:
    """HAOSQ_GROUP=NAME (haosq-worker@NAME): the worker settings of [groups.NAME], above the
    rest of the file and below the environment. Without its own `types`, a group runs the
    types its name says (`email`, or `all` for every type)."""
    groups = sections.get("groups", {})
    table = groups.get(group, {}) if isinstance(groups, Mapping) else {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"[groups.{group}]: expected a table")
    where = f"{found} [groups.{group}]"
    known = group_options()
    for key, raw in table.items():
        option = known.get(key)
        if option is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        values[option.key] = _parse(option, raw, where)
        sources[option.key] = where
    if "types" not in table:
        values["worker.types"] = _parse(_BY_KEY["worker.types"], group, "env HAOSQ_GROUP")
        sources["worker.types"] = "env HAOSQ_GROUP"


def _database_url_from_file(env: Mapping[str, str], values: dict[str, Any], sources: dict[str, str]) -> None:
    """The database URL from a file, so that its password is never on a command line or in
    the environment: HAOSQ_DATABASE_URL_FILE, else the systemd credential `database-url`
    (LoadCredential= in haosq-worker@.service)."""
    candidates = []
    if env.get("HAOSQ_DATABASE_URL_FILE"):
        candidates.append((Path(env["HAOSQ_DATABASE_URL_FILE"]), "file HAOSQ_DATABASE_URL_FILE", True))
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append((Path(env["CREDENTIALS_DIRECTORY"]) / "database-url", "credential database-url",
                           False))
    for path, source, required in candidates:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            if required:
                raise ConfigError(f"HAOSQ_DATABASE_URL_FILE: {path} does not exist") from None
            continue
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
        if text:
            values["database_url"] = text
            sources["database_url"] = source
            return
