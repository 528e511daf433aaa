"""Configuration of the `matrix:*` job types: `[handlers.matrix]`, with HAOSQ_MATRIX_URL,
HAOSQ_MATRIX_TOKEN and HAOSQ_MATRIX_EXPORT_ROOT winning over the file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from haosq.db.queries.profiles import ProfileTable
from haosq.errors import PermanentError
from haosq.handlers.handler_config import with_environment

ENV_NAMES = {
    "url": "HAOSQ_MATRIX_URL",
    "token": "HAOSQ_MATRIX_TOKEN",
    "export_root": "HAOSQ_MATRIX_EXPORT_ROOT",
}


@dataclass(frozen=True)
class MatrixSettings:
    url: str | None = None
    token: str | None = None
    export_root: Path | None = None
    timeout: float = 30.0
    poll_interval: float = 1.0
    purge_timeout: float = 3600.0
    max_inline_wait: float = 10.0
    list_page_size: int = 100
    profile_table: str | None = None
    profile_user_column: str = "matrix_user_id"
    profile_display_name_column: str = "display_name"
    profile_avatar_column: str = "avatar_url"

    @classmethod
    def load(cls, table: Mapping[str, Any], env: Mapping[str, str] | None = None) -> MatrixSettings:
        values = with_environment(table, ENV_NAMES, env)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PermanentError(f"unknown key(s) in [handlers.matrix]: {', '.join(unknown)}")
        try:
            for key in ("timeout", "poll_interval", "purge_timeout", "max_inline_wait"):
                if key in values:
                    values[key] = float(values[key])
                    if values[key] <= 0:
                        raise ValueError(f"{key} must be positive")
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"invalid [handlers.matrix] setting: {exc}") from None
        if "list_page_size" in values:
            values["list_page_size"] = int(values["list_page_size"])
        if values.get("export_root"):
            values["export_root"] = Path(values["export_root"])
        return cls(**values)

    def require_homeserver(self) -> tuple[str, str]:
        if not self.url or not self.token:
            raise PermanentError(
                "no homeserver is configured: set [handlers.matrix] url and token "
                "(or HAOSQ_MATRIX_URL and HAOSQ_MATRIX_TOKEN, an admin's access token)")
        return self.url, self.token

    def require_export_root(self) -> Path:
        if self.export_root is None:
            raise PermanentError(
                "no export directory is configured: set [handlers.matrix] export_root "
                "or HAOSQ_MATRIX_EXPORT_ROOT")
        return self.export_root

    def profile(self) -> ProfileTable:
        if not self.profile_table:
            raise PermanentError(
                "no profile table is configured: set [handlers.matrix] profile_table "
                "(and the profile_*_column names if they differ from the defaults)")
        return ProfileTable(self.profile_table, self.profile_user_column,
                            self.profile_display_name_column, self.profile_avatar_column)
