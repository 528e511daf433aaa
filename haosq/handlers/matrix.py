"""The `matrix:*` job types, over a homeserver's client-server and Synapse admin APIs.

- matrix:room-cleanup  purge history older than N days in a room, in the rooms matching a
                       search, or in all rooms; follows each purge until it completes;
                       optionally deletes the rooms no local user is in any more
- matrix:user-export   a user's profile, rooms and memberships, sent messages and media list,
                       paged, to a JSON (or zip) archive under the export root
- matrix:sync-profile  display name and avatar between the homeserver and the application's
                       profile table (PostgreSQL), in the direction the payload names

Configuration: `[handlers.matrix]` (url, token, export_root, profile_table, ...) with
HAOSQ_MATRIX_URL, HAOSQ_MATRIX_TOKEN and HAOSQ_MATRIX_EXPORT_ROOT winning.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import UTC, datetime, timedelta
from typing import IO, Any, BinaryIO, Literal

from pydantic import Field, model_validator

from haosq.db.queries import profiles
from haosq.errors import PermanentError, Retry
from haosq.handlers.matrix_api import MatrixApiError, MatrixClient, q
from haosq.handlers.matrix_settings import MatrixSettings
from haosq.handlers.pathguard import atomic_output, output_directory
from haosq.handlers.payloads import Payload, parse_payload
from haosq.handlers.registry import JobContext, handler

ADMIN = "/_synapse/admin"
USER_ID = r"^@[^:\s]+:[^\s]+$"
ROOM_ID = r"^![^\s]+$"


def matrix_settings(ctx: JobContext) -> MatrixSettings:
    return MatrixSettings.load(ctx.handler_settings("matrix"))


def client_for(settings: MatrixSettings, ctx: JobContext) -> MatrixClient:
    url, token = settings.require_homeserver()
    return MatrixClient(url, token, timeout=settings.timeout, cancelled=ctx.cancelled,
                        max_inline_wait=settings.max_inline_wait)


def _wait_for(check: Any, what: str, settings: MatrixSettings, ctx: JobContext) -> dict[str, Any]:
    """Poll `check()` until its status is final; a purge or a deletion runs in the background."""
    deadline = time.monotonic() + settings.purge_timeout
    while True:
        status = check()
        if status.get("status") in ("complete", "failed"):
            return status
        if time.monotonic() > deadline:
            raise Retry(f"{what} still running after {settings.purge_timeout:.0f} s", after=60.0)
        if ctx.cancelled.wait(settings.poll_interval):
            raise PermanentError(f"cancelled while waiting for {what}")


# -- matrix:room-cleanup ---------------------------------------------------------------------


class RoomCleanupPayload(Payload):
    room_id: str | None = Field(default=None, pattern=ROOM_ID)
    search: str | None = Field(default=None, min_length=1)
    all_rooms: bool = False
    older_than_days: float | None = Field(default=None, ge=0)
    before: datetime | None = None
    delete_local_events: bool = False
    delete_empty_rooms: bool = False

    @model_validator(mode="after")
    def one_target_and_one_cutoff(self) -> RoomCleanupPayload:
        targets = sum([self.room_id is not None, self.search is not None, self.all_rooms])
        if targets != 1:
            raise ValueError("name exactly one of roomId, search or allRooms")
        if (self.older_than_days is None) == (self.before is None):
            raise ValueError("give exactly one of olderThanDays or before")
        if self.before is not None and self.before.tzinfo is None:
            raise ValueError("before must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        return self


@handler("matrix:room-cleanup", timeout=4 * 3600)
def room_cleanup(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Purge old history in rooms (admin purge-history API); optionally delete empty rooms."""
    request = parse_payload(RoomCleanupPayload, payload)
    settings = matrix_settings(ctx)
    cutoff = request.before or datetime.now(UTC) - timedelta(days=request.older_than_days or 0)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    rooms_out: list[dict[str, Any]] = []
    with client_for(settings, ctx) as client:
        for room in _rooms(client, request, settings.list_page_size):
            try:
                rooms_out.append(_clean_room(client, room, cutoff_ms, request, settings, ctx))
            except MatrixApiError as exc:
                # One room refusing does not stop a sweep over many; a bad token or a single
                # named room does.
                if request.room_id or exc.status in (401, 403):
                    raise
                ctx.log.warn("room cleanup failed", room_id=room["room_id"], error=str(exc))
                rooms_out.append({"roomId": room["room_id"], "status": "failed", "error": str(exc)})
    return {
        "cutoff": cutoff.isoformat(),
        "rooms": rooms_out,
        "purged": sum(1 for r in rooms_out if r["status"] == "purged"),
        "deleted": sum(1 for r in rooms_out if r["status"] == "deleted"),
        "failed": sum(1 for r in rooms_out if r["status"] == "failed"),
    }


def _rooms(client: MatrixClient, request: RoomCleanupPayload, page_size: int) -> list[dict[str, Any]]:
    if request.room_id:
        return [client.get(f"{ADMIN}/v1/rooms/{q(request.room_id)}")]
    rooms: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get(f"{ADMIN}/v1/rooms", search_term=request.search, limit=page_size,
                          **{"from": offset})
        rooms.extend(page.get("rooms", []))
        offset = page.get("next_batch")
    return rooms


def _clean_room(client: MatrixClient, room: dict[str, Any], cutoff_ms: int, request: RoomCleanupPayload,
                settings: MatrixSettings, ctx: JobContext) -> dict[str, Any]:
    room_id = room["room_id"]
    if request.delete_empty_rooms and room.get("joined_local_members", 1) == 0:
        started = client.delete(f"{ADMIN}/v2/rooms/{q(room_id)}", {"purge": True})
        status = _wait_for(lambda: client.get(f"{ADMIN}/v2/rooms/delete_status/{q(started['delete_id'])}"),
                           f"the deletion of {room_id}", settings, ctx)
        ctx.log.info("room deleted", room_id=room_id, status=status["status"])
        return {"roomId": room_id, "status": "deleted" if status["status"] == "complete" else "failed",
                "deleteId": started["delete_id"], "error": status.get("error")}
    try:
        started = client.post(f"{ADMIN}/v1/purge_history/{q(room_id)}", {
            "purge_up_to_ts": cutoff_ms, "delete_local_events": request.delete_local_events})
    except MatrixApiError as exc:
        # Synapse answers 404 when no event is older than the cutoff: nothing to do.
        if exc.status == 404 and "no event to be purged" in exc.error:
            return {"roomId": room_id, "status": "nothing_to_purge"}
        raise
    purge_id = started["purge_id"]
    status = _wait_for(lambda: client.get(f"{ADMIN}/v1/purge_history_status/{q(purge_id)}"),
                       f"the purge of {room_id}", settings, ctx)
    ctx.log.info("history purged", room_id=room_id, purge_id=purge_id, status=status["status"])
    return {"roomId": room_id, "status": "purged" if status["status"] == "complete" else "failed",
            "purgeId": purge_id, "error": status.get("error")}


# -- matrix:user-export ----------------------------------------------------------------------


class UserExportPayload(Payload):
    user_id: str = Field(pattern=USER_ID)
    format: Literal["json", "zip"] = "json"
    include_messages: bool = True
    page_size: int = Field(default=100, ge=1, le=1000)


@handler("matrix:user-export", timeout=4 * 3600)
def user_export(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Export a user's profile, rooms, memberships, sent messages and media list to an archive."""
    request = parse_payload(UserExportPayload, payload)
    settings = matrix_settings(ctx)
    export_root = settings.require_export_root()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    localpart = request.user_id[1:].split(":", 1)[0]
    name = f"{_safe(localpart)}-{stamp}-{ctx.job_id}.{request.format}"
    target = export_root / name
    with client_for(settings, ctx) as client:
        user = client.get(f"{ADMIN}/v2/users/{q(request.user_id)}")
        with output_directory(export_root, what="export_root") as dir_fd, \
                atomic_output(dir_fd, name) as output:
            counts = _write_export(output.file, request, user, client, ctx)
    ctx.log.info("user exported", user_id=request.user_id, path=str(target), **counts)
    return {"userId": request.user_id, "path": str(target), "format": request.format,
            "bytes": output.size, "counts": counts}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-=" else "_" for ch in text)[:100]


def _write_export(out: BinaryIO, request: UserExportPayload, user: dict[str, Any], client: MatrixClient,
                  ctx: JobContext) -> dict[str, int]:
    if request.format == "json":
        text = io.TextIOWrapper(out, encoding="utf-8")
        counts = _stream_export(text, request, user, client, ctx)
        text.flush()
        text.detach()
        return counts
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("export.json", "w", force_zip64=True) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8")
        counts = _stream_export(text, request, user, client, ctx)
        text.flush()
        text.detach()
        return counts


def _stream_export(out: IO[str], request: UserExportPayload, user: dict[str, Any], client: MatrixClient,
                   ctx: JobContext) -> dict[str, int]:
    """Write the export as one JSON document, message by message, so memory stays flat."""
    user_id = request.user_id
    counts = {"rooms": 0, "messages": 0, "media": 0}
    out.write('{"format": "haosq-matrix-user-export/1", ')
    out.write(f'"exportedAt": {json.dumps(datetime.now(UTC).isoformat())}, ')
    out.write(f'"user": {json.dumps(_user_record(user))}, "rooms": [')

    joined = client.get(f"{ADMIN}/v1/users/{q(user_id)}/joined_rooms").get("joined_rooms", [])
    for index, room_id in enumerate(joined):
        out.write(", " if index else "")
        details = client.get(f"{ADMIN}/v1/rooms/{q(room_id)}")
        state = client.get(f"{ADMIN}/v1/rooms/{q(room_id)}/state").get("state", [])
        membership = next((e for e in state if e.get("type") == "m.room.member"
                           and e.get("state_key") == user_id), None)
        room = {"roomId": room_id, "name": details.get("name"),
                "canonicalAlias": details.get("canonical_alias"),
                "joinedMembers": details.get("joined_members"),
                "membership": (membership or {}).get("content", {}).get("membership"),
                "memberEvent": membership}
        out.write(json.dumps(room)[:-1] + ', "messages": [')
        if request.include_messages:
            counts["messages"] += _stream_messages(out, client, room_id, user_id, request.page_size)
        out.write("]}")
        counts["rooms"] += 1
        ctx.log.debug("room exported", room_id=room_id)

    out.write('], "media": [')
    start: int | None = 0
    while start is not None:
        page = client.get(f"{ADMIN}/v1/users/{q(user_id)}/media", limit=request.page_size,
                          **{"from": start, "order_by": "created_ts", "dir": "f"})
        for item in page.get("media", []):
            out.write((", " if counts["media"] else "") + json.dumps(item))
            counts["media"] += 1
        start = page.get("next_token")
    out.write("]}")
    return counts


def _user_record(user: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "displayname", "avatar_url", "admin", "deactivated", "creation_ts", "threepids",
            "external_ids", "user_type", "locked", "erased")
    return {key: user.get(key) for key in keep if key in user}


def _stream_messages(out: IO[str], client: MatrixClient, room_id: str, user_id: str, page_size: int) -> int:
    written = 0
    token: str | None = None
    event_filter = json.dumps({"senders": [user_id], "lazy_load_members": False})
    while True:
        page = client.get(f"{ADMIN}/v1/rooms/{q(room_id)}/messages", dir="f", limit=page_size,
                          filter=event_filter, **({"from": token} if token else {}))
        chunk = page.get("chunk", [])
        for event in chunk:
            # State events (joins, room settings) are part of the room record, not messages.
            if event.get("sender") != user_id or "state_key" in event:
                continue
            out.write((", " if written else "") + json.dumps(event))
            written += 1
        # The homeserver leaves `end` out once the timeline is exhausted; a page may come back
        # empty before that when events are filtered out after the fetch.
        next_token = page.get("end")
        if not next_token or next_token == token:
            return written
        token = next_token


# -- matrix:sync-profile ---------------------------------------------------------------------


class SyncProfilePayload(Payload):
    user_id: str = Field(pattern=USER_ID)
    direction: Literal["to_matrix", "from_matrix"]
    fields: list[Literal["displayName", "avatar"]] = Field(default=["displayName", "avatar"], min_length=1)


@handler("matrix:sync-profile", timeout=300)
def sync_profile(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Copy display name and avatar between the homeserver and the application's profile table."""
    request = parse_payload(SyncProfilePayload, payload)
    settings = matrix_settings(ctx)
    table = settings.profile()
    user_id = request.user_id
    with client_for(settings, ctx) as client, ctx.connection() as conn:
        row = profiles.read_profile(conn, table, user_id)
        if row is None:
            raise PermanentError(f"userId: {user_id} has no row in the profile table {table.table}")
        user = client.get(f"{ADMIN}/v2/users/{q(user_id)}")
        matrix_side = {"displayName": user.get("displayname"), "avatar": user.get("avatar_url")}
        app_side = {"displayName": row["display_name"], "avatar": row["avatar_url"]}
        to_matrix = request.direction == "to_matrix"
        source, target = (app_side, matrix_side) if to_matrix else (matrix_side, app_side)
        changed = {f: {"from": target[f], "to": source[f]} for f in request.fields if source[f] != target[f]}
        if changed and request.direction == "to_matrix":
            avatar = source["avatar"]
            if "avatar" in changed and avatar is not None and not str(avatar).startswith("mxc://"):
                raise PermanentError(
                    f"the profile table's avatar for {user_id} is not an mxc:// URI: {avatar!r}")
            body = {{"displayName": "displayname", "avatar": "avatar_url"}[f]: source[f] for f in changed}
            client.put(f"{ADMIN}/v2/users/{q(user_id)}", body)
        elif changed:
            new = {**app_side, **{f: source[f] for f in changed}}
            profiles.write_profile(conn, table, user_id, new["displayName"], new["avatar"])
    ctx.log.info("profile synced", user_id=user_id, direction=request.direction, changed=sorted(changed))
    return {"userId": user_id, "direction": request.direction, "changed": changed,
            "unchanged": [f for f in request.fields if f not in changed]}
