"""matrix:room-cleanup, matrix:user-export and matrix:sync-profile against a real Synapse."""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg import sql

from haosq.errors import PermanentError
from haosq.handlers.matrix import room_cleanup, sync_profile, user_export

pytest_plugins = ["tests.handlers.peers_files", "tests.handlers.peers_matrix"]
pytestmark = pytest.mark.matrix


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def run(synapse, job_context, tmp_path):
    """Run a matrix handler as the worker would, configured for the test homeserver."""

    def call(function, payload: dict, token: str | None = None, **settings):
        table = {"url": synapse.url, "token": token or synapse.admin.token,
                 "export_root": str(tmp_path / "exports"), "poll_interval": 0.05, **settings}
        job_type = {room_cleanup: "matrix:room-cleanup", user_export: "matrix:user-export",
                    sync_profile: "matrix:sync-profile"}[function]
        return function(payload, job_context(job_type, payload, {"matrix": table}))

    return call


def test_room_cleanup_purges_history_before_the_cutoff(synapse, run):
    alice = synapse.register(unique("alice"))
    room = synapse.create_room(alice, "purge me")
    for i in range(3):
        synapse.send(alice, room, f"old {i}")
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    for i in range(2):
        synapse.send(alice, room, f"new {i}")

    result = run(room_cleanup, {"roomId": room, "before": cutoff.isoformat(), "deleteLocalEvents": True})

    assert result["purged"] == 1 and result["failed"] == 0
    assert result["rooms"][0]["roomId"] == room and result["rooms"][0]["status"] == "purged"
    assert [e["content"]["body"] for e in synapse.messages(alice, room)] == ["new 0", "new 1"]


def test_room_cleanup_with_nothing_older_than_the_cutoff(synapse, run):
    alice = synapse.register(unique("alice"))
    room = synapse.create_room(alice, "young room")
    synapse.send(alice, room, "hello")
    result = run(room_cleanup, {"roomId": room, "before": "2001-01-01T00:00:00Z"})
    assert result["rooms"] == [{"roomId": room, "status": "nothing_to_purge"}]
    assert [e["content"]["body"] for e in synapse.messages(alice, room)] == ["hello"]


def test_room_cleanup_by_search_purges_every_matching_room(synapse, run):
    tag = unique("sweep-")
    bob = synapse.register(unique("bob"))
    matched = [synapse.create_room(bob, f"{tag} {i}") for i in range(3)]
    for room in matched:
        synapse.send(bob, room, "old news")
    other = synapse.create_room(bob, "not matched")
    synapse.send(bob, other, "keep me")

    result = run(room_cleanup, {"search": tag, "olderThanDays": 0, "deleteLocalEvents": True})

    assert {r["roomId"]: r["status"] for r in result["rooms"]} == dict.fromkeys(matched, "purged")
    assert result["purged"] == 3
    assert [e["content"]["body"] for e in synapse.messages(bob, other)] == ["keep me"]


def test_room_cleanup_deletes_a_room_without_local_members(synapse, run):
    bob = synapse.register(unique("bob"))
    empty = synapse.create_room(bob, "abandoned")
    synapse.send(bob, empty, "bye")
    synapse.leave(bob, empty)
    kept = synapse.create_room(bob, "lived in")

    for room in (empty, kept):
        result = run(room_cleanup, {"roomId": room, "olderThanDays": 30, "deleteEmptyRooms": True})
        assert result["rooms"][0]["status"] == ("deleted" if room == empty else "nothing_to_purge")
    assert synapse.admin_get(f"/_synapse/admin/v1/rooms/{empty}") == {"status": 404}
    assert synapse.admin_get(f"/_synapse/admin/v1/rooms/{kept}")["room_id"] == kept


def test_room_cleanup_of_all_rooms_pages_through_the_room_list(synapse, run):
    bob = synapse.register(unique("bob"))
    for i in range(3):
        synapse.create_room(bob, f"many {i}")
    total = synapse.admin_get("/_synapse/admin/v1/rooms?limit=1")["total_rooms"]
    result = run(room_cleanup, {"allRooms": True, "before": "2001-01-01T00:00:00Z"}, list_page_size=2)
    assert len(result["rooms"]) == total >= 3
    assert {r["status"] for r in result["rooms"]} == {"nothing_to_purge"}


def test_user_export_collects_profile_rooms_messages_and_media_across_pages(synapse, run):
    carol = synapse.register(unique("carol"), displayname="Carol Export")
    dave = synapse.register(unique("dave"))
    first = synapse.create_room(carol, "first", invite=[dave.user_id])
    synapse.join(dave, first)
    second = synapse.create_room(carol, "second")
    for i in range(5):
        synapse.send(carol, first, f"carol {i}")
        synapse.send(dave, first, f"dave {i}")
    synapse.send(carol, second, "carol in second")
    media = [synapse.upload(carol, b"\x89PNG\r\n\x1a\n" + bytes([i]) * 50) for i in range(3)]

    result = run(user_export, {"userId": carol.user_id, "pageSize": 2})

    assert result["counts"] == {"rooms": 2, "messages": 6, "media": 3}
    path = Path(result["path"])
    assert path.parent.name == "exports" and path.suffix == ".json"
    export = json.loads(path.read_text())
    assert export["user"]["displayname"] == "Carol Export"
    rooms = {room["roomId"]: room for room in export["rooms"]}
    assert set(rooms) == {first, second}
    assert rooms[first]["name"] == "first" and rooms[first]["membership"] == "join"
    assert [m["content"]["body"] for m in rooms[first]["messages"]] == [f"carol {i}" for i in range(5)]
    assert {m["sender"] for m in rooms[first]["messages"]} == {carol.user_id}
    assert [m["content"]["body"] for m in rooms[second]["messages"]] == ["carol in second"]
    assert sorted(f"mxc://localhost/{m['media_id']}" for m in export["media"]) == sorted(media)


def test_user_export_as_zip(synapse, run):
    erin = synapse.register(unique("erin"))
    room = synapse.create_room(erin, "zip room")
    synapse.send(erin, room, "zipped")

    result = run(user_export, {"user_id": erin.user_id, "format": "zip", "include_messages": True})

    with zipfile.ZipFile(result["path"]) as archive:
        export = json.loads(archive.read("export.json"))
    assert result["counts"] == {"rooms": 1, "messages": 1, "media": 0}
    assert export["rooms"][0]["messages"][0]["content"]["body"] == "zipped"
    assert not list(Path(result["path"]).parent.glob("*.part"))


def test_export_of_an_unknown_user_fails_permanently(synapse, run, tmp_path):
    with pytest.raises(PermanentError, match="HTTP 404"):
        run(user_export, {"userId": "@nobody-here:localhost"})
    assert not list((tmp_path / "exports").glob("*")) if (tmp_path / "exports").exists() else True


def test_401_and_403_are_permanent_with_a_clear_error(synapse, run):
    with pytest.raises(PermanentError, match=r"HTTP 401 .*access token valid"):
        run(user_export, {"userId": synapse.admin.user_id}, token="syt_not_a_token")
    plain = synapse.register(unique("plain"))
    with pytest.raises(PermanentError, match=r"HTTP 403 .*server admin"):
        run(room_cleanup, {"allRooms": True, "olderThanDays": 30}, token=plain.token)


@pytest.fixture
def profile_table(conn):
    conn.execute("CREATE SCHEMA app")
    conn.execute("""CREATE TABLE app."User Profiles" (
                      mxid text PRIMARY KEY, "Display" text, avatar text)""")
    return {"profile_table": "app.User Profiles", "profile_user_column": "mxid",
            "profile_display_name_column": "Display", "profile_avatar_column": "avatar"}


def _row(conn, user_id: str) -> dict:
    return conn.execute(sql.SQL('SELECT "Display", avatar FROM app."User Profiles" WHERE mxid = %s'),
                        (user_id,)).fetchone()


def test_sync_profile_to_matrix_and_back(synapse, run, conn, profile_table):
    frank = synapse.register(unique("frank"), displayname="Frank On Matrix")
    avatar = synapse.upload(frank, b"\x89PNG\r\n\x1a\n" + b"avatar" * 10)
    conn.execute('INSERT INTO app."User Profiles" VALUES (%s, %s, %s)',
                 (frank.user_id, "Frank In The App", avatar))

    result = run(sync_profile, {"userId": frank.user_id, "direction": "to_matrix"}, **profile_table)

    assert result["changed"]["displayName"] == {"from": "Frank On Matrix", "to": "Frank In The App"}
    assert result["changed"]["avatar"] == {"from": None, "to": avatar}
    user = synapse.admin_get(f"/_synapse/admin/v2/users/{frank.user_id}")
    assert (user["displayname"], user["avatar_url"]) == ("Frank In The App", avatar)

    again = run(sync_profile, {"userId": frank.user_id, "direction": "to_matrix"}, **profile_table)
    assert again["changed"] == {} and again["unchanged"] == ["displayName", "avatar"]

    with synapse.client(frank.token) as http:
        http.put(f"/_matrix/client/v3/profile/{frank.user_id}/displayname",
                 json={"displayname": "Frank Renamed"}).raise_for_status()
    back = run(sync_profile, {"userId": frank.user_id, "direction": "from_matrix",
                              "fields": ["displayName"]}, **profile_table)
    assert back["changed"] == {"displayName": {"from": "Frank In The App", "to": "Frank Renamed"}}
    assert _row(conn, frank.user_id) == {"Display": "Frank Renamed", "avatar": avatar}


def test_sync_profile_refuses_missing_rows_and_non_mxc_avatars(synapse, run, conn, profile_table):
    gina = synapse.register(unique("gina"))
    with pytest.raises(PermanentError, match="has no row in the profile table"):
        run(sync_profile, {"userId": gina.user_id, "direction": "from_matrix"}, **profile_table)
    conn.execute('INSERT INTO app."User Profiles" VALUES (%s, %s, %s)',
                 (gina.user_id, "Gina", "https://example.org/a.png"))
    with pytest.raises(PermanentError, match="not an mxc:// URI"):
        run(sync_profile, {"userId": gina.user_id, "direction": "to_matrix"}, **profile_table)
    user = synapse.admin_get(f"/_synapse/admin/v2/users/{gina.user_id}")
    assert user["displayname"] != "Gina"  # nothing was written


@pytest.mark.parametrize(("function", "payload", "field"), [
    (room_cleanup, {"olderThanDays": 3}, "exactly one of roomId, search or allRooms"),
    (room_cleanup, {"allRooms": True, "olderThanDays": 3, "before": "2020-01-01T00:00:00Z"},
     "exactly one of olderThanDays or before"),
    (room_cleanup, {"roomId": "not-a-room", "olderThanDays": 3}, "field 'roomId'"),
    (user_export, {"userId": "carol"}, "field 'userId'"),
    (user_export, {"userId": "@c:localhost", "format": "tar"}, "field 'format'"),
    (sync_profile, {"userId": "@c:localhost", "direction": "sideways"}, "field 'direction'"),
])
def test_bad_payloads_fail_before_any_request(run, function, payload, field):
    with pytest.raises(PermanentError, match=field):
        run(function, payload)
