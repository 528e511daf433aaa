"""Per-job checkpoints: the units of work a job has finished, kept across its retries."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def load_checkpoints(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT key, value FROM haosq.job_checkpoints WHERE job_id = %s", (job_id,)
    ).fetchall()
    return {_field(row, 0, "key"): _field(row, 1, "value") for row in rows}


def record_checkpoint(conn: psycopg.Connection[Any], job_id: int, key: str, value: Any) -> None:
    conn.execute(
        """INSERT INTO haosq.job_checkpoints (job_id, key, value) VALUES (%s, %s, %s)
           ON CONFLICT (job_id, key) DO UPDATE SET value = EXCLUDED.value""",
        (job_id, key, Jsonb(value)),
    )


def _field(row: Any, index: int, name: str) -> Any:
    # Pool connections return dict rows; a caller's own connection may return tuples.
    return row[name] if isinstance(row, dict) else row[index]
