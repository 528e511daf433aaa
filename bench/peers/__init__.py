"""Peer queues measured beside haosq: PgQueuer and Procrastinate.

Each peer runs in its own virtualenv (never the project's), created by `venv.ensure_venv()`
with the latest releases from PyPI. The runner scripts in this folder are executed by that
virtualenv's Python and import nothing of haosq; `sweep.py` drives them from the project's
side and keeps each peer's best configuration.
"""
