"""The `haosq` command line: one typer app, one module per command group."""

from typing import Any

from haosq.cli.app import build_app, main

__all__ = ["app", "build_app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":  # built on use: a command line loads only the module of its command
        return build_app()
    raise AttributeError(f"module 'haosq.cli' has no attribute {name!r}")
