"""The peers' own virtualenv, outside the project's: created on first use, reused after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_VENV = Path("/var/cache/haosq-bench/peers-venv")
PACKAGES = ("pgqueuer", "procrastinate", "asyncpg", "psycopg[binary]")
DISTRIBUTIONS = ("pgqueuer", "procrastinate", "asyncpg", "psycopg")


def venv_dir() -> Path:
    return Path(os.environ.get("HAOSQ_BENCH_PEERS_VENV", DEFAULT_VENV))


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def installed_versions(python: Path) -> dict[str, str] | None:
    probe = (
        "import importlib.metadata as m, json\n"
        f"print(json.dumps({{d: m.version(d) for d in {list(DISTRIBUTIONS)!r}}}))"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def ensure_venv(upgrade: bool = False) -> tuple[Path, dict[str, str]]:
    """The peers' Python and the versions installed in it (latest releases when created or
    when `upgrade` is asked)."""
    python = venv_python()
    if not python.exists():
        venv_dir().parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
        upgrade = True
    versions = None if upgrade else installed_versions(python)
    if versions is None:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", *PACKAGES],
                       check=True)
        versions = installed_versions(python)
        if versions is None:
            raise RuntimeError(f"the peers' virtualenv in {venv_dir()} is unusable")
    return python, versions
