"""The benchmark's job types: `bench:noop` does nothing, so that a drain measures the queue;
`bench:stamp` returns when its handler started, for pickup latency."""

from __future__ import annotations

import time
from typing import Any

import haosq


@haosq.handler("bench:noop")
def noop(payload: dict[str, Any]) -> None:
    return None


@haosq.handler("bench:stamp")
def stamp(payload: dict[str, Any]) -> float:
    return time.time()
