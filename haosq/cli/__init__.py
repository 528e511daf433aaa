"""The `haosq` command line: one typer app, one module per command group."""

from haosq.cli.app import app, main

__all__ = ["app", "main"]
