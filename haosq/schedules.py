"""Recurring schedules: definitions, validation and due-time arithmetic.

Pure logic shared by `JobQueue.schedule`, the `haosq schedules` commands and the daemon's
scheduler; nothing here touches the database.

A schedule fires on a 5-field cron expression read in its timezone, or every fixed interval
counted from its anchor. APScheduler's triggers compute the candidate fire times; this
module decides which of them are due and guards against their daylight-saving quirks:

- a wall-clock time skipped by a spring-forward change fires once, shifted by the gap
  (02:30 on the night clocks jump from 02:00 to 03:00 fires at 03:30);
- a wall-clock time repeated by a fall-back change fires once, at its first occurrence
  (fire times must advance in UTC *and* in local wall time).

Misfires (runs that fell due while no daemon was running) follow `catch_up`:
`none` enqueues only a run that is at most `MISFIRE_GRACE` late, `latest` enqueues the
latest missed run once (coalesced), `all` enqueues the missed runs, at most
`catch_up_limit` of them (the most recent ones).

Config file form:

    [[schedules]]
    name = "nightly-report"
    type = "reports:nightly"
    cron = "0 3 * * *"          # or: interval = "15m"
    timezone = "Europe/Berlin"  # default UTC
    payload = { format = "pdf" }
    priority = 0
    max_attempts = 3
    catch_up = "latest"         # none | latest | all
    catch_up_limit = 10
    enabled = true
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from haosq.durations import parse_duration
from haosq.errors import HaosqError

CATCH_UP_POLICIES = ("none", "latest", "all")
DEFAULT_CATCH_UP = "latest"
DEFAULT_CATCH_UP_LIMIT = 10
MAX_CATCH_UP_LIMIT = 1000
# How late a run may be enqueued and still count as on time (catch_up = "none").
MISFIRE_GRACE = timedelta(seconds=60)
MIN_INTERVAL = timedelta(seconds=1)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
_MICROSECOND = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)
# Bounds the search through a daylight-saving fold (at most one step per minute of it).
_MAX_STEPS = 3000


class InvalidSchedule(HaosqError):
    """A schedule definition is invalid (cron, interval, timezone, policy, job options)."""


class ScheduleNotFound(HaosqError):
    """No schedule has the given name."""


class ScheduleExists(HaosqError):
    """A schedule with this name exists already."""


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: expected up to 200 letters, digits, "
            "'.', '_', ':' or '-', starting with a letter or digit"
        )
    return name


def validate_timezone(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidSchedule(f"invalid timezone {name!r}: expected an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown timezone {name!r}: expected an IANA name such as UTC or Europe/Berlin"
        ) from None
    return name


def validate_cron(expression: object, timezone: str = "UTC") -> str:
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule(f"invalid cron expression {expression!r}: expected 5 fields, e.g. '0 3 * * *'")
    cleaned = " ".join(expression.split())
    try:
        CronTrigger.from_crontab(cleaned, timezone=ZoneInfo(timezone))
    except ValueError as exc:
        raise InvalidSchedule(
            f"invalid cron expression {expression!r}: {exc} "
            "(fields: minute hour day-of-month month day-of-week)"
        ) from None
    return cleaned


def validate_interval(interval: object) -> timedelta:
    if isinstance(interval, str):
        try:
            interval = parse_duration(interval)
        except ValueError as exc:
            raise InvalidSchedule(f"invalid interval: {exc}") from None
    elif isinstance(interval, int | float) and not isinstance(interval, bool):
        interval = timedelta(seconds=interval)
    if not isinstance(interval, timedelta):
        raise InvalidSchedule(f"invalid interval {interval!r}: expected e.g. '15m' or a number of seconds")
    if interval < MIN_INTERVAL:
        raise InvalidSchedule(f"invalid interval {interval}: the shortest interval is {MIN_INTERVAL}")
    return interval


def validate_catch_up(policy: object, limit: object) -> tuple[str, int]:
    if policy not in CATCH_UP_POLICIES:
        raise InvalidSchedule(
            f"invalid catch_up {policy!r}: expected one of {', '.join(CATCH_UP_POLICIES)}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CATCH_UP_LIMIT:
        raise InvalidSchedule(
            f"invalid catch_up_limit {limit!r}: expected an integer from 1 to {MAX_CATCH_UP_LIMIT}"
        )
    return str(policy), limit


@functools.lru_cache(maxsize=1024)
def _cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """Parsed once per expression and zone: a tick asks for many fire times. CronTrigger
    keeps no state between calls, so sharing one between threads is safe."""
    return CronTrigger.from_crontab(expression, timezone=ZoneInfo(timezone))


@dataclass(frozen=True)
class Trigger:
    """When a schedule fires: a cron expression in a timezone, or an interval from an anchor."""

    cron: str | None = None
    interval: timedelta | None = None
    timezone: str = "UTC"
    anchor: datetime | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise InvalidSchedule("a schedule needs exactly one of cron or interval")
        if self.interval is not None and self.anchor is None:
            raise InvalidSchedule("an interval schedule needs an anchor time")

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after`, in UTC (None: never again)."""
        if self.interval is not None:
            assert self.anchor is not None
            trigger = IntervalTrigger(seconds=self.interval.total_seconds(),
                                      start_date=self.anchor, timezone=UTC)
            found = trigger.get_next_fire_time(None, after + _MICROSECOND)
            return found.astimezone(UTC) if found else None
        return self._next_cron_after(after)

    def _next_cron_after(self, after: datetime) -> datetime | None:
        zone = self._zone
        cron = _cron_trigger(self.cron or "", self.timezone)
        after_wall = after.astimezone(zone).replace(tzinfo=None)
        query = after + _MICROSECOND
        for _ in range(_MAX_STEPS):
            found = cron.get_next_fire_time(None, query)
            if found is None:
                return None
            at = found.astimezone(UTC)
            if at >= query and at.astimezone(zone).replace(tzinfo=None) > after_wall:
                return at
            # A later instant with a repeated wall time (its first occurrence fired): go
            # past it. An earlier instant (APScheduler inside a fall-back fold): step by a
            # minute, the cron resolution, until it moves forward again.
            forward = at >= query
            query = at + _MICROSECOND if forward else query.replace(second=0, microsecond=0) + _MINUTE
        raise InvalidSchedule(f"cannot find the next fire time of cron {self.cron!r} after {after}")

    def fire_times(self, start: datetime, end: datetime, keep_last: int) -> list[datetime]:
        """The last `keep_last` fire times t with start <= t <= end, oldest first, where
        `start` is itself a fire time.

        Searches backwards from `end` in growing windows, so that a schedule that fires every
        minute and missed a month of runs costs a few steps, not 40,000."""
        if end < start:
            return []
        window = timedelta(minutes=1)
        while True:
            low = max(start, end - window)
            times: list[datetime] = []
            # `start` is a fire time already (a stored next_due_at): take it as it is. Asked
            # for again, a time shifted by a spring-forward gap would not come back.
            at = start if low == start else self.next_after(low - _MICROSECOND)
            while at is not None and at <= end:
                times.append(at)
                at = self.next_after(at)
            if len(times) >= keep_last or low == start:
                return times[-keep_last:]
            window *= 4


@dataclass(frozen=True)
class RunPlan:
    """What a daemon enqueues for one due schedule, and the schedule's next due time."""

    due_times: list[datetime]
    next_due_at: datetime | None


def plan_runs(
    trigger: Trigger, catch_up: str, catch_up_limit: int, next_due_at: datetime, now: datetime
) -> RunPlan:
    """The runs due at `now` for a schedule whose next run was due at `next_due_at`."""
    if next_due_at > now:
        return RunPlan([], next_due_at)
    following = trigger.next_after(now)
    keep = catch_up_limit if catch_up == "all" else 1
    due = trigger.fire_times(next_due_at, now, keep)
    if catch_up == "none":
        due = [t for t in due if now - t <= MISFIRE_GRACE]
    return RunPlan(due, following)


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated schedule definition (what the user gives; state lives in the database)."""

    name: str
    type: str
    payload_json: str = "{}"
    cron: str | None = None
    interval: timedelta | None = None
    timezone: str = "UTC"
    priority: int = 0
    max_attempts: int | None = None
    tags: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    catch_up: str = DEFAULT_CATCH_UP
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT
    enabled: bool = True

    def trigger(self, anchor: datetime) -> Trigger:
        return Trigger(cron=self.cron, interval=self.interval, timezone=self.timezone, anchor=anchor)

    def first_due_at(self, now: datetime) -> datetime:
        """The first run of a schedule created at `now` (an interval counts from `now`)."""
        first = self.trigger(now).next_after(now)
        if first is None:
            raise InvalidSchedule(f"schedule {self.name!r} never fires")
        return first


def make_spec(
    name: str,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    cron: str | None = None,
    interval: str | float | timedelta | None = None,
    timezone: str = "UTC",
    priority: int = 0,
    max_attempts: int | None = None,
    tags: Iterable[str] = (),
    timeout: float | timedelta | None = None,
    catch_up: str = DEFAULT_CATCH_UP,
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
    enabled: bool = True,
    max_payload_bytes: int = 1024 * 1024,
) -> ScheduleSpec:
    """Validate a definition; every problem raises `InvalidSchedule` with a clear message."""
    # Imported here: haosq.queue imports this module for JobQueue.schedule.
    from haosq import queue as job_rules
    from haosq.errors import InvalidJob

    name = validate_name(name)
    if (cron is None) == (interval is None):
        raise InvalidSchedule(f"schedule {name!r}: give exactly one of cron or interval")
    timezone = validate_timezone(timezone)
    if cron is not None:
        cron = validate_cron(cron, timezone)
    every = validate_interval(interval) if interval is not None else None
    policy, limit = validate_catch_up(catch_up, catch_up_limit)
    if not isinstance(enabled, bool):
        raise InvalidSchedule(f"schedule {name!r}: enabled must be true or false")
    try:
        return ScheduleSpec(
            name=name,
            type=job_rules.validate_type(type),
            payload_json=job_rules.serialise_payload({} if payload is None else payload,
                                                     max_payload_bytes),
            cron=cron,
            interval=every,
            timezone=timezone,
            priority=job_rules.validate_priority(priority),
            max_attempts=job_rules.validate_max_attempts(max_attempts),
            tags=job_rules.validate_tags(tags),
            timeout_seconds=job_rules.validate_timeout(timeout),
            catch_up=policy,
            catch_up_limit=limit,
            enabled=enabled,
        )
    except InvalidJob as exc:
        raise InvalidSchedule(f"schedule {name!r}: {exc}") from None


_CONFIG_KEYS = {
    "name", "type", "payload", "cron", "interval", "timezone", "priority", "max_attempts", "tags",
    "timeout", "catch_up", "catch_up_limit", "enabled",
}


def spec_from_mapping(entry: Mapping[str, Any], where: str, max_payload_bytes: int = 1024 * 1024
                      ) -> ScheduleSpec:
    """One `[[schedules]]` table (or an equivalent dict) as a validated spec."""
    if not isinstance(entry, Mapping):
        raise InvalidSchedule(f"{where}: expected a table, got {type(entry).__name__}")
    unknown = set(entry) - _CONFIG_KEYS
    if unknown:
        raise InvalidSchedule(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for required in ("name", "type"):
        if required not in entry:
            raise InvalidSchedule(f"{where}: missing {required!r}")
    options = {k: v for k, v in entry.items() if k not in ("name", "type", "payload")}
    try:
        return make_spec(entry["name"], entry["type"], entry.get("payload"),
                         max_payload_bytes=max_payload_bytes, **options)
    except InvalidSchedule as exc:
        raise InvalidSchedule(f"{where}: {exc}") from None


def load_config_schedules(sections: Mapping[str, Any], where: str = "config",
                          max_payload_bytes: int = 1024 * 1024) -> list[ScheduleSpec]:
    """The `[[schedules]]` of a config file (Settings.sections), validated; names must be unique."""
    entries = sections.get("schedules", [])
    if isinstance(entries, Mapping):
        raise InvalidSchedule(f"{where}: write schedules as [[schedules]] tables, one per schedule")
    if not isinstance(entries, Sequence):
        raise InvalidSchedule(f"{where}: [[schedules]] must be a list of tables")
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        spec = spec_from_mapping(entry, f"{where}: schedule #{index}", max_payload_bytes)
        if spec.name in seen:
            raise InvalidSchedule(f"{where}: duplicate schedule name {spec.name!r}")
        seen.add(spec.name)
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class Schedule:
    """One schedule as `JobQueue.schedules()` and `haosq schedules list` show it.

    `last_outcome` is the status of the job the latest run enqueued (pending, processing,
    completed, failed, cancelled), None before the first run, or "pruned" once retention
    deleted that job."""

    name: str
    type: str
    cron: str | None
    interval_seconds: float | None
    timezone: str
    enabled: bool
    next_due_at: datetime
    last_due_at: datetime | None
    last_outcome: str | None
    last_job_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int | None = None
    tags: list[str] = field(default_factory=list)
    catch_up: str = DEFAULT_CATCH_UP
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT
    source: str = "api"
    id: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in row.items() if k in names})

    @property
    def every(self) -> str:
        """The trigger in words: the cron expression, or "every 15m"."""
        if self.cron is not None:
            return self.cron
        from haosq.durations import format_duration

        return f"every {format_duration(self.interval_seconds)}"


def spec_row(spec: ScheduleSpec, *, source: str, now: datetime) -> Any:
    """The database row for a new (or rewritten) schedule created at `now`."""
    from haosq.db.queries.schedules import ScheduleRow

    return ScheduleRow(
        name=spec.name, type=spec.type, payload_json=spec.payload_json, cron=spec.cron,
        interval_seconds=spec.interval.total_seconds() if spec.interval else None,
        timezone=spec.timezone, priority=spec.priority, max_attempts=spec.max_attempts,
        tags=spec.tags, timeout_seconds=spec.timeout_seconds, catch_up=spec.catch_up,
        catch_up_limit=spec.catch_up_limit, enabled=spec.enabled, source=source,
        anchor_at=now, next_due_at=spec.first_due_at(now),
    )


def trigger_of(row: Mapping[str, Any]) -> Trigger:
    """The trigger of a stored schedule row."""
    interval = row.get("interval_seconds")
    return Trigger(
        cron=row.get("cron"),
        interval=timedelta(seconds=interval) if interval is not None else None,
        timezone=row.get("timezone") or "UTC",
        anchor=row.get("anchor_at"),
    )
