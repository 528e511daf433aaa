"""The `demo:*` job types, used by `haosq demo` and the tests.

- demo:echo  returns its payload (or `value`) as the result
- demo:sleep sleeps `seconds` (default 0.1), waking early when the job is cancelled
- demo:fail  raises: `permanent` true for a permanent error, else a retryable one;
             with `succeed_on_attempt`, succeeds from that attempt on
"""

from __future__ import annotations

from typing import Any

from haosq.errors import PermanentError
from haosq.handlers.registry import JobContext, handler


@handler("demo:echo")
def echo(payload: dict[str, Any], ctx: JobContext) -> Any:
    ctx.log.info("echo", keys=sorted(payload))
    return payload.get("value", payload)


@handler("demo:sleep")
def sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    seconds = float(payload.get("seconds", 0.1))
    interrupted = ctx.cancelled.wait(seconds)
    return {"slept": seconds, "interrupted": interrupted}


class DemoFailure(RuntimeError):
    """The error demo:fail raises."""


@handler("demo:fail")
def fail(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    succeed_on = payload.get("succeed_on_attempt")
    if succeed_on is not None and ctx.attempt >= int(succeed_on):
        return {"succeeded_on_attempt": ctx.attempt}
    message = str(payload.get("message", f"demo failure on attempt {ctx.attempt}"))
    if payload.get("permanent"):
        raise PermanentError(message)
    raise DemoFailure(message)
