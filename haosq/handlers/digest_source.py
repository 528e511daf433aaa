"""Where a digest's items come from, and how they are marked sent exactly once.

Items are either in the payload or collected in haosq.digest_items. A digest job claims the
pending items of its recipient and channel, sends one message, then records a checkpoint and
marks the items sent. A retry of the same job finds the checkpoint (the message went out: only
the marking is repeated) or claims the same items again (it did not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from haosq.db.queries import digests as digest_sql
from haosq.handlers.registry import JobContext

CHECKPOINT = "digest"


@dataclass
class DigestBatch:
    items: list[Any]
    ids: list[int] = field(default_factory=list)
    already_sent: dict[str, Any] | None = None


def claim_digest(
    ctx: JobContext, recipient: str, channel: str, payload_items: list[Any] | None, limit: int,
    *, key: str = CHECKPOINT,
) -> DigestBatch:
    done = ctx.checkpoints().get(key)
    if done is not None:
        if done.get("ids") and ctx.database is not None:
            with ctx.connection() as conn:
                digest_sql.mark_sent(conn, done["ids"], ctx.job_id)
        return DigestBatch(items=[], already_sent=done["result"])
    if payload_items is not None:
        return DigestBatch(items=list(payload_items))
    with ctx.connection() as conn:
        rows = digest_sql.claim_items(conn, recipient, channel, ctx.job_id, limit)
    return DigestBatch(items=[row["item"] for row in rows], ids=[row["id"] for row in rows])


def finish_digest(ctx: JobContext, batch: DigestBatch, result: dict[str, Any], *,
                  key: str = CHECKPOINT) -> dict[str, Any]:
    """Record the sent message, then mark its items sent (a retry repeats only the marking)."""
    ctx.checkpoint_done(key, {"ids": batch.ids, "result": result})
    if batch.ids:
        with ctx.connection() as conn:
            digest_sql.mark_sent(conn, batch.ids, ctx.job_id)
    return result


def pending_recipients(ctx: JobContext, channel: str, limit: int) -> list[str]:
    """Recipients with unsent items on `channel`, for a digest sent to every one of them."""
    with ctx.connection() as conn:
        return digest_sql.pending_recipients(conn, channel, limit)
