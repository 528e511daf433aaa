"""The deployment docs and the Grafana dashboard name only metrics the endpoint exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from haosq.daemon.metrics import MetricsServer
from tests.deploy.helpers import job, snapshot

DOCS = Path(__file__).resolve().parents[2] / "docs"


def exported_names(database_url: str) -> set[str]:
    server = MetricsServer(database_url, port=0, host="127.0.0.1")
    server.on_ready(snapshot())
    server.on_job_claimed(job())
    for outcome in ("completed", "failed", "retried", "cancelled", "released"):
        server.on_job_finished(job(), outcome, 0.1)
    server.on_database_error(OSError("x"))
    from prometheus_client import generate_latest

    text = generate_latest(server.registry).decode()
    server.probe.close()
    families = list(text_string_to_metric_families(text))
    return {family.name for family in families} | {
        sample.name for family in families for sample in family.samples}


def test_dashboard_and_docs_use_exported_metrics(database_url):
    names = exported_names(database_url)
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    texts = [*expressions, (DOCS / "grafana.md").read_text(), (DOCS / "deploy.md").read_text()]
    used = {name for text in texts for name in re.findall(r"\bhaosq_[a-z_]+", text)}
    # Role names and the schema are not metrics.
    used -= {"haosq_producer", "haosq_worker", "haosq_viewer", "haosq_admin", "haosq_app_worker"}
    used = {name for name in used if not name.endswith("_")}
    missing = sorted(name for name in used if name not in names)
    assert missing == [], missing
    assert {"haosq_queue_depth", "haosq_job_duration_seconds_bucket", "haosq_busy_slots",
            "haosq_heartbeat_age_seconds", "haosq_database_errors_total"} <= names
