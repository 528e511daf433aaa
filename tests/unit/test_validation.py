from datetime import UTC, datetime, timedelta, timezone

import pytest

from haosq.durations import format_duration, parse_duration
from haosq.errors import InvalidJob
from haosq.queue import (
    serialise_payload,
    validate_max_attempts,
    validate_priority,
    validate_scheduled_at,
    validate_tags,
    validate_timeout,
    validate_type,
)


@pytest.mark.parametrize("good", ["email:send", "file:process-upload", "a1:b_2.c", "x:y"])
def test_valid_types(good):
    assert validate_type(good) == good


@pytest.mark.parametrize("bad", ["email", "Email:send", "email:", ":send", "a:b:c", "e mail:x",
                                 "email:send;drop", "", None, 3, "ä:b"])
def test_invalid_types_are_refused_with_the_expected_form(bad):
    with pytest.raises(InvalidJob, match="family:action"):
        validate_type(bad)


def test_payload_must_be_a_json_object():
    assert serialise_payload({"a": [1, "x"]}, 1000) == '{"a":[1,"x"]}'
    for bad, fragment in [([1, 2], "JSON object"), ("text", "JSON object"),
                          ({"when": datetime.now()}, "not JSON-serialisable"),
                          ({"n": float("nan")}, "not JSON-serialisable"),
                          ({"s": "a\x00b"}, "NUL")]:
        with pytest.raises(InvalidJob, match=fragment):
            serialise_payload(bad, 1000)


def test_escaped_backslash_before_u0000_text_is_not_a_nul():
    # A literal backslash followed by "u0000" is ordinary text, not a NUL character.
    assert serialise_payload({"s": "\\u0000"}, 1000)


def test_payload_size_limit_counts_utf8_bytes():
    assert serialise_payload({"s": "é" * 10}, 100)
    with pytest.raises(InvalidJob, match=r"over the limit of 30 bytes"):
        serialise_payload({"s": "é" * 20}, 30)


def test_priority_bounds():
    assert validate_priority(1000) == 1000
    assert validate_priority(-1000) == -1000
    for bad in (1001, -1001, True, 1.5, "1"):
        with pytest.raises(InvalidJob, match="priority"):
            validate_priority(bad)


def test_max_attempts():
    assert validate_max_attempts(None) is None
    assert validate_max_attempts(1) == 1
    for bad in (0, -2, True, "3"):
        with pytest.raises(InvalidJob, match="max_attempts"):
            validate_max_attempts(bad)


def test_naive_scheduled_at_is_taken_as_utc():
    naive = datetime(2030, 1, 1, 12, 0)
    assert validate_scheduled_at(naive) == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    aware = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert validate_scheduled_at(aware) is aware
    with pytest.raises(InvalidJob, match="scheduled_at"):
        validate_scheduled_at("2030-01-01")


def test_tags_and_timeout():
    assert validate_tags(["a", "b"]) == ("a", "b")
    for bad in ("single-string", [""], ["x" * 101], [1], ["a\x00"]):
        with pytest.raises(InvalidJob, match="tag"):
            validate_tags(bad)
    assert validate_timeout(timedelta(minutes=1)) == 60.0
    with pytest.raises(InvalidJob, match="timeout"):
        validate_timeout(0)


def test_durations_round_trip():
    assert parse_duration("10m") == timedelta(minutes=10)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("", "10x", "m10", "1h-2m", "99999999999d", "1e400"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)
    assert format_duration(0.25) == "250ms"
    assert format_duration(245) == "4m05s"
    assert format_duration(None) == "-"
