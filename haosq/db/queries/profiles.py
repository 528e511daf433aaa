"""The application's profile table, read and written by `matrix:sync-profile`.

The table and its columns come from configuration (`[handlers.matrix] profile_*`), so every
name goes through `sql.Identifier`; values are always bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


@dataclass(frozen=True)
class ProfileTable:
    table: str  # "profiles" or "schema.profiles"
    user_column: str
    display_name_column: str
    avatar_column: str

    def identifier(self) -> sql.Identifier:
        return sql.Identifier(*self.table.split(".", 1))


def read_profile(conn: psycopg.Connection[Any], profile: ProfileTable, user_id: str) -> dict[str, Any] | None:
    """{"display_name", "avatar_url"} of the row for `user_id`, or None when there is none."""
    query = sql.SQL("SELECT {dn} AS display_name, {av} AS avatar_url FROM {table} WHERE {key} = %s").format(
        dn=sql.Identifier(profile.display_name_column), av=sql.Identifier(profile.avatar_column),
        table=profile.identifier(), key=sql.Identifier(profile.user_column))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (user_id,)).fetchone()


def write_profile(conn: psycopg.Connection[Any], profile: ProfileTable, user_id: str,
                  display_name: str | None, avatar_url: str | None) -> bool:
    """Set both columns of the row for `user_id`; False when there is no such row."""
    query = sql.SQL("UPDATE {table} SET {dn} = %s, {av} = %s WHERE {key} = %s").format(
        table=profile.identifier(), dn=sql.Identifier(profile.display_name_column),
        av=sql.Identifier(profile.avatar_column), key=sql.Identifier(profile.user_column))
    with conn.cursor() as cur:
        cur.execute(query, (display_name, avatar_url, user_id))
        return cur.rowcount > 0
