"""The metrics endpoint scraped over real HTTP and parsed; /healthz against a real server."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from haosq.clock import FrozenClock
from haosq.daemon.metrics import MetricsServer
from tests.deploy.helpers import job, snapshot


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def metrics(database_url):
    server = MetricsServer(database_url, port=0, host="127.0.0.1", queue_cache_seconds=0)
    server.start()
    yield server
    server.stop(5)


def test_scrape_counts_durations_and_queue(metrics, queue):
    queue.add("email:send", {"to": "a@example.com"})
    queue.add("email:send", {"to": "b@example.com"})
    queue.add("files:copy", {}, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
    metrics.on_ready(snapshot(busy=0))
    for n in range(3):
        metrics.on_job_claimed(job("email:send", n))
    metrics.on_job_finished(job("email:send", 0), "completed", 0.2)
    metrics.on_job_finished(job("email:send", 1), "failed", 3.0)
    metrics.on_job_finished(job("email:send", 2), "retried", 0.01)
    metrics.on_database_error(OSError("boom"))

    status, body = get(f"http://127.0.0.1:{metrics.port}/metrics")
    assert status == 200
    found = samples(body)
    email = (("type", "email:send"),)
    assert found[("haosq_jobs_claimed_total", email)] == 3
    assert found[("haosq_jobs_completed_total", email)] == 1
    assert found[("haosq_jobs_failed_total", email)] == 1
    assert found[("haosq_jobs_retried_total", email)] == 1
    assert found[("haosq_job_duration_seconds_count",
                  (("outcome", "completed"), ("type", "email:send")))] == 1
    assert found[("haosq_job_duration_seconds_bucket",
                  (("le", "0.25"), ("outcome", "completed"), ("type", "email:send")))] == 1
    assert found[("haosq_job_duration_seconds_bucket",
                  (("le", "2.5"), ("outcome", "failed"), ("type", "email:send")))] == 0
    assert found[("haosq_database_errors_total", ())] == 1
    assert found[("haosq_busy_slots", ())] == 0
    assert found[("haosq_concurrency", ())] == 16
    assert found[("haosq_queue_depth", email)] == 2
    assert found[("haosq_queue_scheduled", (("type", "files:copy"),))] == 1
    assert found[("haosq_queue_oldest_pending_age_seconds", email)] >= 0
    assert found[("haosq_queue_metrics_up", ())] == 1
    assert found[("haosq_ready", ())] == 1


def test_busy_slots_follow_claims_between_heartbeats(metrics):
    metrics.on_heartbeat(snapshot(busy=0))
    metrics.on_job_claimed(job())
    metrics.on_job_claimed(job())
    found = samples(get(f"http://127.0.0.1:{metrics.port}/metrics")[1])
    assert found[("haosq_busy_slots", ())] == 2


def test_heartbeat_age_from_the_snapshot(database_url):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    server = MetricsServer(database_url, port=0, host="127.0.0.1", clock=clock)
    server.start()
    try:
        server.on_heartbeat(snapshot(last_heartbeat_ok=clock.now() - timedelta(seconds=42),
                                     loop_alive_at=clock.now()))
        found = samples(get(f"http://127.0.0.1:{server.port}/metrics")[1])
        assert found[("haosq_heartbeat_age_seconds", ())] == 42
    finally:
        server.stop(5)


def test_healthz_states(database_url):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    server = MetricsServer(database_url, port=0, host="127.0.0.1", clock=clock, loop_stale_after=30)
    server.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        assert get(url) == (503, "starting\n")
        server.on_ready(snapshot(loop_alive_at=clock.now()))
        assert get(url) == (200, "ok\n")
        clock.advance(31)
        status, body = get(url)
        assert status == 503 and body.startswith("claim loop silent")
        server.on_stopping(snapshot(stopping=True, loop_alive_at=clock.now()))
        assert get(url) == (503, "stopping\n")
        assert get(f"http://127.0.0.1:{server.port}/nothing")[0] == 404
    finally:
        server.stop(5)


def test_healthz_goes_unhealthy_when_the_database_stops(throwaway_server):
    url, stop = throwaway_server.url, throwaway_server.stop
    server = MetricsServer(url, port=0, host="127.0.0.1")
    server.start()
    health = f"http://127.0.0.1:{server.port}/healthz"
    try:
        server.on_ready(snapshot(loop_alive_at=datetime.now(UTC)))
        assert get(health) == (200, "ok\n")
        stop()
        status, body = get(health)
        assert status == 503
        assert body.startswith("database unreachable")
        found = samples(get(f"http://127.0.0.1:{server.port}/metrics")[1])
        assert found[("haosq_queue_metrics_up", ())] == 0
    finally:
        server.stop(5)
