"""Digest items: content collected for a recipient and channel until a digest job sends it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb


def add_item(conn: psycopg.Connection[Any], recipient: str, channel: str, item: Any) -> int:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """INSERT INTO haosq.digest_items (recipient, channel, item)
               VALUES (%s, %s, %s) RETURNING id""",
            (recipient, channel, Jsonb(item)),
        ).fetchone()
    assert row is not None
    return int(row["id"])


# A claim held by a job that is still pending or processing is respected; the claiming job
# itself (a retry) takes its items again.
CLAIM_ITEMS = """
UPDATE haosq.digest_items d SET claimed_by = %(job_id)s
 WHERE d.id IN (
       SELECT i.id FROM haosq.digest_items i
        WHERE i.recipient = %(recipient)s AND i.channel = %(channel)s AND i.sent_at IS NULL
          AND (i.claimed_by IS NULL OR i.claimed_by = %(job_id)s
               OR NOT EXISTS (SELECT 1 FROM haosq.jobs j
                               WHERE j.id = i.claimed_by AND j.status IN ('pending', 'processing')))
     ORDER BY i.id
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.item, d.created_at
"""


def claim_items(
    conn: psycopg.Connection[Any], recipient: str, channel: str, job_id: int, limit: int
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            CLAIM_ITEMS,
            {"recipient": recipient, "channel": channel, "job_id": job_id, "limit": limit},
        ).fetchall()
    return sorted(rows, key=lambda row: row["id"])


def mark_sent(conn: psycopg.Connection[Any], ids: Sequence[int], job_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute(
            """UPDATE haosq.digest_items SET sent_at = now(), sent_by = %s
                WHERE id = ANY(%s) AND sent_at IS NULL""",
            (job_id, list(ids)),
        )
        return cur.rowcount


def release_claims(conn: psycopg.Connection[Any], job_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE haosq.digest_items SET claimed_by = NULL WHERE claimed_by = %s AND sent_at IS NULL",
            (job_id,),
        )
        return cur.rowcount


def pending_count(conn: psycopg.Connection[Any], recipient: str, channel: str) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            """SELECT count(*) FROM haosq.digest_items
                WHERE recipient = %s AND channel = %s AND sent_at IS NULL""",
            (recipient, channel),
        ).fetchone()
    return int(row[0]) if row else 0


def pending_recipients(conn: psycopg.Connection[Any], channel: str, limit: int) -> list[str]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """SELECT DISTINCT recipient FROM haosq.digest_items
                WHERE channel = %s AND sent_at IS NULL ORDER BY recipient LIMIT %s""",
            (channel, limit),
        ).fetchall()
    return [row[0] for row in rows]
