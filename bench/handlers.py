"""The benchmark's job type: `bench:noop` does nothing, so that a drain measures the queue."""

from __future__ import annotations

from typing import Any

import haosq


@haosq.handler("bench:noop")
def noop(payload: dict[str, Any]) -> None:
    return None
