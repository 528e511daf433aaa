"""The `haosq` command run in-process: `haosq.cli.main` with its own argv and captured
standard streams, so that a case costs a function call instead of a Python start-up, and still
goes through the entry point's error handling (exit codes, one line on stderr).

A few tests keep real subprocesses, for what only a process shows: the console script, the
exit status the shell sees, an end-to-end run.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from haosq.cli import common, main


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


def invoke(args: list[str], *, stdin: str = "", width: int = 400) -> Result:
    """Run `haosq ARGS` in this process (the environment is the caller's)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    consoles = (common.console, common.error_console)
    widths = [console.width for console in consoles]
    code = 0
    try:
        sys.stdin, sys.stdout, sys.stderr = _Stdin(stdin), out, err
        for console in consoles:
            console.width = width
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for console, saved_width in zip(consoles, widths, strict=True):
            console.width = saved_width
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ holding exactly the haosq settings of `env` (and nothing else of haosq's)."""
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith(("HAOSQ_", "JOB_QUEUE_")) or key == "DATABASE_URL":
                del os.environ[key]
        os.environ.update({k: v for k, v in env.items()
                           if k.startswith(("HAOSQ_", "JOB_QUEUE_")) or k == "DATABASE_URL"})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def cli_runner(cli_env: dict[str, str]) -> Iterator[None]:
    """In-process `haosq` runs against this test's database (see `invoke`)."""
    with environment(cli_env):
        yield
