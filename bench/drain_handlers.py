"""Handlers for bench/drain.py: a no-op, and one that reports when it started."""

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
