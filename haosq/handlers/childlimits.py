"""A memory cap for the child process a job runs in.

Handlers that run in the process executor's child (`executor="process"`) may cap the memory
of that child, so that a file which gets past every other limit fails its own job with a
MemoryError instead of taking the machine's memory (and the worker with it, when the OOM
killer chooses). The cap is only ever set in such a child: in the worker process it would
cap every job and the worker itself, so there it is not applied.

On Linux the cap is RLIMIT_DATA, which counts the heap and every private writable mapping
(what decoders allocate) but not the shared libraries mapped in nor address space reserved
and never used; elsewhere RLIMIT_AS, where the platform has it.
"""

from __future__ import annotations

import sys

try:
    import resource
except ImportError:  # a platform without setrlimit
    resource = None  # type: ignore[assignment]

_in_job_child = False


def enter_job_child() -> None:
    """Called by the process executor in its child, before the handler runs."""
    global _in_job_child
    _in_job_child = True


def _which() -> int | None:
    if resource is None:
        return None
    if sys.platform.startswith("linux"):
        return int(resource.RLIMIT_DATA)
    return getattr(resource, "RLIMIT_AS", None)


def cap_memory(limit: int) -> bool:
    """Cap this process's memory at `limit` bytes when it is a job's child (never beyond the
    hard limit it was started with); whether a cap is in force."""
    which = _which()
    if not _in_job_child or limit <= 0 or which is None:
        return False
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or limit < soft:
        resource.setrlimit(which, (limit, hard))
    return True
