"""Bad input through the Python API: each call raises a HaosqError with a clear message, and
the database is left exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from haosq.errors import HaosqError, InvalidJob
from haosq.queue import JobQueue, JobSpec
from tests.badinput.snapshot import snapshot


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


class Opaque:
    pass


CASES: dict[str, Callable[[JobQueue], Any]] = {
    # types
    "type None": lambda q: q.add(None, {}),  # type: ignore[arg-type]
    "type uppercase": lambda q: q.add("Email:Send", {}),
    "type SQL": lambda q: q.add("email:send'); DELETE FROM haosq.jobs; --", {}),
    "type unicode": lambda q: q.add("émail:send", {}),
    "type NUL": lambda q: q.add("email:se\x00nd", {}),
    "type empty": lambda q: q.add("", {}),
    # payloads
    "payload list": lambda q: q.add("email:send", [1, 2]),  # type: ignore[arg-type]
    "payload string": lambda q: q.add("email:send", "{}"),  # type: ignore[arg-type]
    "payload NaN": lambda q: q.add("email:send", {"a": float("nan")}),
    "payload infinity": lambda q: q.add("email:send", {"a": float("inf")}),
    "payload bytes": lambda q: q.add("email:send", {"a": b"raw"}),
    "payload object": lambda q: q.add("email:send", {"a": Opaque()}),
    "payload NUL value": lambda q: q.add("email:send", {"a": "x\x00y"}),
    "payload NUL key": lambda q: q.add("email:send", {"k\x00": 1}),
    "payload lone surrogate": lambda q: q.add("email:send", {"a": "\ud800"}),
    "payload huge": lambda q: q.add("email:send", {"a": "x" * (2 * 1024 * 1024)}),
    "payload nested deeply": lambda q: q.add("email:send", nested(100_000)),
    # numbers
    "priority too low": lambda q: q.add("email:send", {}, priority=-1001),
    "priority too high": lambda q: q.add("email:send", {}, priority=10**20),
    "priority float": lambda q: q.add("email:send", {}, priority=1.5),  # type: ignore[arg-type]
    "priority bool": lambda q: q.add("email:send", {}, priority=True),
    "priority string": lambda q: q.add("email:send", {}, priority="1"),  # type: ignore[arg-type]
    "max_attempts zero": lambda q: q.add("email:send", {}, max_attempts=0),
    "max_attempts negative": lambda q: q.add("email:send", {}, max_attempts=-3),
    "max_attempts string": lambda q: q.add("email:send", {}, max_attempts="3"),  # type: ignore[arg-type]
    "timeout negative": lambda q: q.add("email:send", {}, timeout=-1),
    "timeout zero timedelta": lambda q: q.add("email:send", {}, timeout=timedelta(0)),
    "timeout NaN": lambda q: q.add("email:send", {}, timeout=float("nan")),
    "timeout infinite": lambda q: q.add("email:send", {}, timeout=float("inf")),
    "scheduled_at string": lambda q: q.add("email:send", {}, scheduled_at="tomorrow"),  # type: ignore[arg-type]
    # tags and names
    "tags string": lambda q: q.add("email:send", {}, tags="urgent"),
    "tags None inside": lambda q: q.add("email:send", {}, tags=[None]),  # type: ignore[list-item]
    "tag empty": lambda q: q.add("email:send", {}, tags=[""]),
    "tag NUL": lambda q: q.add("email:send", {}, tags=["a\x00b"]),
    "tag too long": lambda q: q.add("email:send", {}, tags=["t" * 101]),
    "too many tags": lambda q: q.add("email:send", {}, tags=[f"t{i}" for i in range(51)]),
    "created_by NUL": lambda q: q.add("email:send", {}, created_by="a\x00"),
    # add_many is all or nothing
    "add_many one bad job": lambda q: q.add_many(
        [{"type": "email:send", "payload": {"i": i}} for i in range(50)] + [{"type": "BAD"}]),
    "add_many bad payload last": lambda q: q.add_many(
        [JobSpec("email:send", {"i": 1}), JobSpec("email:send", {"a": "\x00"})]),
    "add_many unknown option": lambda q: q.add_many([{"type": "email:send", "colour": "red"}]),
    "add_many no type": lambda q: q.add_many([{"payload": {}}]),
    "add_many integers": lambda q: q.add_many([1, 2]),  # type: ignore[list-item]
    "add_many a string": lambda q: q.add_many("email:send"),  # type: ignore[arg-type]
    "add_many a single dict": lambda q: q.add_many({"type": "email:send"}),  # type: ignore[arg-type]
    # filters
    "status SQL": lambda q: q.list(status="pending' OR '1'='1"),
    "type filter SQL": lambda q: q.list(type="x' OR '1'='1"),
    "tag filter NUL": lambda q: q.list(tag="a\x00"),
    "search NUL": lambda q: q.list(search="\x00"),
    "limit negative": lambda q: q.list(limit=-1),
    "limit huge": lambda q: q.list(limit=2**70),
    "limit string": lambda q: q.list(limit="10"),  # type: ignore[arg-type]
    "created_after string": lambda q: q.list(created_after="yesterday"),  # type: ignore[arg-type]
    "retry_matching bad status": lambda q: q.retry_matching(q.filter(status="bogus")),
    # ids
    "get missing": lambda q: q.get(2**70),
    "retry missing": lambda q: q.retry(-1),
    "cancel missing": lambda q: q.cancel(2**70),
    "logs missing": lambda q: q.logs(0),
    # schedules
    "cron out of range": lambda q: q.schedule("s", "email:send", {}, cron="61 * * * *"),
    "cron too few fields": lambda q: q.schedule("s", "email:send", {}, cron="* * *"),
    "cron garbage": lambda q: q.schedule("s", "email:send", {}, cron="@yearly garbage"),
    "cron SQL": lambda q: q.schedule("s", "email:send", {}, cron="'; DROP TABLE haosq.jobs; --"),
    "cron NUL": lambda q: q.schedule("s", "email:send", {}, cron="* * * * *\x00"),
    "cron and interval": lambda q: q.schedule("s", "email:send", {}, cron="* * * * *", interval="1h"),
    "interval zero": lambda q: q.schedule("s", "email:send", {}, interval="0s"),
    "interval negative": lambda q: q.schedule("s", "email:send", {}, interval="-1h"),
    "timezone unknown": lambda q: q.schedule("s", "email:send", {}, cron="* * * * *",
                                             timezone="Mars/Olympus"),
    "schedule name SQL": lambda q: q.schedule("x'; DROP TABLE haosq.jobs; --", "email:send", {},
                                              interval="1h"),
    "schedule name NUL": lambda q: q.schedule("a\x00", "email:send", {}, interval="1h"),
    "schedule bad type": lambda q: q.schedule("s", "Not A Type", {}, interval="1h"),
    "schedule bad payload": lambda q: q.schedule("s", "email:send", {"a": "\x00"}, interval="1h"),
    "schedule bad priority": lambda q: q.schedule("s", "email:send", {}, interval="1h", priority=-5000),
    "unschedule missing": lambda q: q.unschedule("nope"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_clear_error_and_changes_nothing(
        case: str, queue: JobQueue, conn: psycopg.Connection) -> None:
    queue.add("email:send", {"seed": True}, tags=["before"])
    queue.schedule("existing", "email:send", {}, interval="1h")
    before = snapshot(conn)
    with pytest.raises(HaosqError) as raised:
        CASES[case](queue)
    message = str(raised.value)
    assert message and "\n" not in message and len(message) < 500, message
    assert "Traceback" not in message
    assert snapshot(conn) == before


@pytest.mark.parametrize("value", [
    "'; DELETE FROM haosq.jobs; --", "%", "_", "\\", "x' OR '1'='1", "🚀 ünïcödé", "$1", "?",
])
def test_sql_metacharacters_in_tags_and_search_are_plain_text(
        value: str, queue: JobQueue, conn: psycopg.Connection) -> None:
    """A legal tag or search text full of SQL matches itself and nothing else."""
    plain = queue.add("email:send", {}, tags=["plain"])
    odd = queue.add("email:send", {"note": value}, tags=[value])
    before = snapshot(conn)
    assert [j.id for j in queue.list(tag=value)] == [odd.id]
    assert [j.id for j in queue.list(tag="plain")] == [plain.id]
    assert queue.list(search=value) == []
    assert queue.get(odd.id).payload == {"note": value}
    assert snapshot(conn) == before


def test_unicode_survives_the_round_trip(queue: JobQueue) -> None:
    payload = {"emoji": "📬", "rtl": "مرحبا", "combining": "e\u0301", "zero_width": "a\u200bb",
               "escaped_nul_text": "\\u0000 is text here", "ключ": [1, "два"]}
    job = queue.add("email:send", payload, tags=["ünï"], created_by="josé")
    assert queue.get(job.id).payload == payload
    assert queue.list(tag="ünï")[0].id == job.id


def test_payload_at_the_limit_is_accepted_and_one_byte_over_is_not(
        queue: JobQueue, conn: psycopg.Connection) -> None:
    limit = queue.settings["max_payload_bytes"]
    filler = limit - len('{"a":""}')
    assert queue.add("email:send", {"a": "x" * filler}).id
    before = snapshot(conn)
    with pytest.raises(InvalidJob, match="over the limit"):
        queue.add("email:send", {"a": "x" * (filler + 1)})
    assert snapshot(conn) == before
