"""`haosq worker --import MODULE` from a project directory, as `python -m` and `celery -A` do:
the current directory is on the import path; a missing module and a module that fails inside
get one clear line each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from tests.integration.worker_support import wait_status

HAOSQ = str(Path(sys.executable).with_name("haosq"))  # the console script a user runs

JOBS_MODULE = '''\
import haosq


@haosq.handler("myapp:greet")
def greet(payload, ctx):
    ctx.log.info("greeting", name=payload["name"])
    return {"greeting": f"hello {payload['name']}"}


@haosq.handler("myapp:heavy", executor="process", timeout=60)
def heavy(payload, ctx):
    return {"sum": sum(range(payload["n"]))}
'''


def project(tmp_path: Path, jobs_source: str = JOBS_MODULE) -> Path:
    root = tmp_path / "project"
    (root / "myapp").mkdir(parents=True)
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / "jobs.py").write_text(jobs_source)
    return root


def test_worker_imports_a_module_of_the_current_directory(cli_env, conn: psycopg.Connection,
                                                           tmp_path: Path) -> None:
    root = project(tmp_path)
    greet = conn.execute("SELECT haosq.add_job('myapp:greet', '{\"name\": \"ann\"}') AS id"
                         ).fetchone()["id"]
    heavy = conn.execute("SELECT haosq.add_job('myapp:heavy', '{\"n\": 1000}') AS id").fetchone()["id"]
    log = tmp_path / "worker.log"
    with log.open("w") as err:
        proc = subprocess.Popen([HAOSQ, "worker", "--types", "myapp", "--import", "myapp.jobs",
                                 "--poll-interval", "100"],
                                env=cli_env, cwd=root, stdout=subprocess.DEVNULL, stderr=err)
        try:
            done = wait_status(conn, greet, "completed", "failed", timeout=30)
            assert done["status"] == "completed", log.read_text()
            assert done["result"] == {"greeting": "hello ann"}
            # The process executor's child imports the module by name from the same directory.
            ran = wait_status(conn, heavy, "completed", "failed", timeout=30)
            assert ran["status"] == "completed", (ran["error"], log.read_text())
            assert ran["result"] == {"sum": 499500}
        finally:
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0, log.read_text()


def run_worker(cli_env: dict[str, str], cwd: Path, module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HAOSQ, "worker", "--import", module], env=cli_env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_module_is_one_line(cli_env, tmp_path: Path) -> None:
    root = project(tmp_path)
    missing = run_worker(cli_env, root, "myapp.nosuch")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "haosq: error: cannot import handler module 'myapp.nosuch': No module named 'myapp.nosuch' "
        f"(looked in {root} and the installed packages)"]
    other = run_worker(cli_env, root, "nosuchapp.jobs")
    assert other.returncode == 2
    assert "cannot import handler module 'nosuchapp.jobs': No module named 'nosuchapp'" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_an_error_inside_the_module_names_the_module_and_the_error(cli_env, tmp_path: Path) -> None:
    root = project(tmp_path, "import haosq\nimport requests_that_do_not_exist\n")
    inner = run_worker(cli_env, root, "myapp.jobs")
    assert inner.returncode == 2
    lines = inner.stderr.strip().splitlines()
    assert len(lines) == 1, inner.stderr
    assert lines[0].startswith("haosq: error: handler module 'myapp.jobs' failed to import: "
                               "ModuleNotFoundError: No module named 'requests_that_do_not_exist'")
    assert f"{root / 'myapp' / 'jobs.py'}, line 2" in lines[0]

    (root / "myapp" / "jobs.py").write_text("import haosq\n\n\nraise RuntimeError('no config')\n")
    broken = run_worker(cli_env, root, "myapp.jobs")
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == [
        "haosq: error: handler module 'myapp.jobs' failed to import: RuntimeError: no config "
        f"({root / 'myapp' / 'jobs.py'}, line 4)"]
