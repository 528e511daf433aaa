"""Every code block of README.md and docs/*.md runs as written, or says why not
(tests/docs/examples.py: the markers).

Each document runs top to bottom as a user following it would: in a project directory of
its own (the working directory), with a HOME of its own, `haosq` and `python` of this
virtualenv on PATH and HAOSQ_DATABASE_URL pointing at a fresh database. A real `haosq
worker` for the built-in families runs beside the examples with the document's
configuration, its peers pointed at the test's own: aiosmtpd for email, a Matrix push gateway
over HTTPS, clamd. The examples' paths under /srv are real: every command runs in a private
mount namespace where /srv is a temporary directory holding an application's uploads
(`/srv/uploads/image.jpg`, a JPEG; `/srv/uploads/tmp/`, an old and a new log file).

After each block, jobs scheduled for later are made due, the worker drains the queue, and
every job the examples caused must be `completed`; jobs of the project's own types wait for
the worker a later block starts, and at the end of the document nothing may be left undone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import embedded_data_dir
from tests.docs.examples import DOCUMENTS, Example, Unclassified, blocks, classify, examples

pytest_plugins = ["tests.handlers.peers_files"]  # clamd

BIN = Path(sys.executable).parent
WORKER_FAMILIES = ("email", "file", "notification", "cleanup", "demo")
NOTIFY_PATH = "/_matrix/push/v1/notify"
FINISHED = ("completed", "failed", "cancelled")
DRAIN_SECONDS = 90


def can_bind_srv() -> bool:
    if shutil.which("unshare") is None or not Path("/srv").is_dir():
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True)
    return probe.returncode == 0


NAMESPACES = can_bind_srv()


# -- the world the examples run in ------------------------------------------------------------

class World:
    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.project = tmp / "project"
        self.home = tmp / "home"
        self.srv = tmp / "srv"
        self.scripts = tmp / "scripts"
        for directory in (self.project, self.home, self.scripts):
            directory.mkdir()
        self._make_uploads()
        self.env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "HAOSQ_DATABASE_URL": database_url,
            "LANG": "C.UTF-8",
            "TZ": os.environ.get("TZ", "UTC"),
        }
        if Path("/etc/haosq/haosq.toml").exists():  # this machine's own file is not the user's
            self.env["HAOSQ_CONFIG"] = str(self.home / ".config/haosq/haosq.toml")
        self.given: set[int] = set()
        self.embedded_dirs: list[Path] = []

    def _make_uploads(self) -> None:
        from PIL import Image

        uploads = self.srv / "uploads"
        (uploads / "tmp").mkdir(parents=True)
        Image.new("RGB", (64, 48), (200, 30, 30)).save(uploads / "image.jpg", "JPEG")
        old = uploads / "tmp" / "old.log"
        old.write_text("old\n")
        long_ago = time.time() - 40 * 86400
        os.utime(old, (long_ago, long_ago))
        (uploads / "tmp" / "new.log").write_text("new\n")

    def command(self, args: list[str]) -> list[str]:
        """`args` in a mount namespace of its own where /srv is this world's directory."""
        if not NAMESPACES:
            return args
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /srv && exec "$@"', str(self.srv), *args]

    def run(self, args: list[str], env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args), cwd=self.project, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(args), cwd=self.project, env=env or self.env,
                                stdout=log.open("w"), stderr=subprocess.STDOUT)

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)


def toml_text(table: dict[str, Any], prefix: str = "") -> str:
    """TOML for the plain tables a configuration holds (scalars, lists, tables, arrays of
    tables)."""
    scalars, tables = [], []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            tables.append(f"\n[{name}]\n" + toml_text(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.extend(f"\n[[{name}]]\n" + toml_text(v, f"{name}.") for v in value)
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    return "".join(line + "\n" for line in scalars) + "".join(tables)


def worker_config(world: World, document_config: dict[str, Any], peers: dict[str, Any]) -> Path:
    """The document's configuration with its peers replaced by the test's."""
    config = json.loads(json.dumps(document_config))
    handlers = config.setdefault("handlers", {})
    handlers.setdefault("smtp", {}).update(url=peers["smtp"].url)
    handlers["smtp"].setdefault("from", "noreply@example.com")
    handlers.setdefault("push", {}).update(
        gateway_url=peers["gateway"].url + NOTIFY_PATH, allow_private=["127.0.0.1"],
        ca_bundle=str(peers["ca_bundle"]))
    handlers.setdefault("files", {}).update(clamd_address=f"unix:{peers['clamd'].socket}",
                                            clamd_config=str(peers["clamd"].config))
    path = world.tmp / "worker.toml"
    path.write_text(toml_text(config))
    return path


# -- running one document ---------------------------------------------------------------------

class DocumentRun:
    def __init__(self, world: World, path: Path, peers: dict[str, Any]) -> None:
        self.world = world
        self.path = path
        self.examples = examples(path)
        self.peers = peers
        self.worker: subprocess.Popen | None = None
        self.worker_log = world.tmp / "worker.log"
        # (block, type, how far ahead) of the jobs the examples scheduled for later.
        self.scheduled: list[tuple[str, str, Any]] = []

    def start_worker(self) -> None:
        config: dict[str, Any] = {}
        for example in self.examples:
            if example.kind == "config":
                config = _merge(config, tomllib.loads(example.block.text))
                target = self.world.home / ".config/haosq/haosq.toml"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(example.block.text)
        env = {**self.world.env, "HAOSQ_CONFIG": str(worker_config(self.world, config, self.peers))}
        self.worker = self.world.popen(
            [str(BIN / "haosq"), "worker", "--types", ",".join(WORKER_FAMILIES), "--concurrency", "8",
             "--poll-interval", "100", "--heartbeat-interval", "1000", "--worker-id", "docs-worker"],
            self.worker_log, env=env)
        self.wait_worker_ready(self.worker, "the examples' worker")

    def wait_worker_ready(self, process: subprocess.Popen, what: str, log: Path | None = None) -> None:
        log = log or self.worker_log
        deadline = time.monotonic() + 60
        with self.world.connect() as conn:
            while conn.execute("SELECT 1 FROM haosq.workers WHERE pid = %s AND status = 'active'",
                               (process.pid,)).fetchone() is None:
                assert process.poll() is None, f"{what} exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"{what} did not start: {log.read_text()}"
                time.sleep(0.05)

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            self.worker.wait(60)

    def run(self) -> None:
        self.start_worker()
        try:
            for example in self.examples:
                self.run_one(example)
            self.drain("the end of the document")
            self.check_all_done(final=True)
        finally:
            self.stop_worker()

    def run_one(self, example: Example) -> None:
        kind = example.kind
        if kind in ("output", "skip", "config"):
            return
        if example.given:
            self.make_given(example.given)
        if kind == "file":
            self.write_file(example)
        elif kind == "run-python":
            self.expect_success(example, self.world.run([str(BIN / "python"), self.script(example, ".py")],
                                                        env=self.env_for(example)))
        elif kind == "run-shell":
            self.expect_success(example, self.world.run(
                ["bash", "-e", "-o", "pipefail", self.script(example, ".sh")], env=self.env_for(example)))
        elif kind == "run-sql":
            self.run_sql(example)
        elif kind == "config-check":
            config = self.world.tmp / "check.toml"
            config.write_text(example.block.text)
            checked = self.world.run([str(BIN / "haosq"), "config", "check"],
                                     env={**self.world.env, "HAOSQ_CONFIG": str(config)})
            self.expect_success(example, checked)
        elif kind == "daemon":
            self.run_daemon(example)
        self.drain(example.where)
        self.check_all_done(final=False, where=example.where)

    def env_for(self, example: Example) -> dict[str, str]:
        if not example.embedded:
            return self.world.env
        env = {k: v for k, v in self.world.env.items() if k != "HAOSQ_DATABASE_URL"}
        data = embedded_data_dir()
        self.world.embedded_dirs.append(data)
        env["HAOSQ_DATA_DIR"] = str(data)
        return env

    def script(self, example: Example, suffix: str) -> str:
        path = self.world.scripts / f"line{example.block.line}{suffix}"
        path.write_text(example.block.text)
        return str(path)

    def expect_success(self, example: Example, done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode == 0, (
            f"{example.where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        assert "Traceback" not in done.stderr, f"{example.where}:\n{done.stderr}"

    def write_file(self, example: Example) -> None:
        target = Path(example.arg)
        path = self.world.home / target.relative_to("~") if example.arg.startswith("~/") \
            else self.world.project / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example.block.text)
        if path.suffix == ".py":
            module = ".".join(path.relative_to(self.world.project).with_suffix("").parts)
            imported = self.world.run([str(BIN / "python"), "-c", f"import {module}"])
            self.expect_success(example, imported)

    def run_sql(self, example: Example) -> None:
        with self.world.connect() as conn:
            before = conn.execute("SELECT coalesce(max(id), 0) AS id FROM haosq.jobs").fetchone()["id"]
            cursor = conn.execute(example.block.text)
            row = cursor.fetchone() if cursor.description else None
            if "add_job(" in example.block.text:
                assert row is not None, f"{example.where}: add_job returned nothing"
                job_id = next(iter(row.values()))
                new = conn.execute("SELECT id FROM haosq.jobs WHERE id > %s", (before,)).fetchall()
                assert [r["id"] for r in new] == [job_id], f"{example.where}: {job_id} is not the new job"

    def run_daemon(self, example: Example) -> None:
        log = self.world.tmp / f"daemon-{example.block.line}.log"
        args = ([str(BIN / "python"), self.script(example, ".py")] if example.arg == "python"
                else ["bash", "-e", "-c", f"exec {example.block.text.strip()}"])
        process = self.world.popen(args, log, env=self.env_for(example))
        try:
            self.wait_worker_ready(process, f"{example.where}", log)
            with self.world.connect() as conn:
                types = conn.execute("SELECT job_types FROM haosq.workers WHERE pid = %s",
                                     (process.pid,)).fetchone()["job_types"] or []
            self.drain(example.where, types=types)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
        assert code == 0, f"{example.where}: SIGTERM ended it with {code}:\n{log.read_text()}"

    def make_given(self, given: dict[int, str]) -> None:
        with self.world.connect() as conn:
            for job_id, state in given.items():
                conn.execute("DELETE FROM haosq.jobs WHERE id = %s", (job_id,))
                payload = json.dumps({"to": "user@example.com", "subject": "Welcome!",
                                      "text": "Welcome to HAOS!"})
                if state == "failed":
                    conn.execute(
                        "INSERT INTO haosq.jobs (id, type, payload, status, attempts, max_attempts, "
                        "error, started_at, completed_at) OVERRIDING SYSTEM VALUE VALUES "
                        "(%s, 'email:send', %s, 'failed', 3, 3, 'SMTP server unreachable', now(), now())",
                        (job_id, payload))
                else:
                    conn.execute(
                        "INSERT INTO haosq.jobs (id, type, payload, scheduled_at, due_at) "
                        "OVERRIDING SYSTEM VALUE VALUES (%s, 'email:send', %s, now() + interval '1 day', "
                        "now() + interval '1 day')", (job_id, payload))
                self.world.given.add(job_id)

    def drain(self, where: str, types: list[str] | None = None) -> None:
        """Make later jobs due, then wait until the worker has no runnable or running job
        left (of `types`, or of the built-in families)."""
        selectors = types or list(WORKER_FAMILIES)
        deadline = time.monotonic() + DRAIN_SECONDS
        with self.world.connect() as conn:
            made_due = conn.execute(
                "UPDATE haosq.jobs SET due_at = now() WHERE status = 'pending' AND due_at > now() "
                "AND NOT (id = ANY(%s)) RETURNING id, type, scheduled_at - created_at AS ahead",
                (sorted(self.world.given),)).fetchall()
            self.scheduled.extend((where, row["type"], row["ahead"]) for row in made_due)
            while True:
                rows = conn.execute(
                    "SELECT id, type, status FROM haosq.jobs WHERE (status = 'pending' AND due_at <= now()) "
                    "OR status = 'processing'").fetchall()
                waiting = [r for r in rows if r["status"] == "processing"
                           or _selected(r["type"], selectors)]
                if not waiting:
                    return
                assert self.worker is None or self.worker.poll() is None, self.worker_log.read_text()
                assert time.monotonic() < deadline, (
                    f"after {where}: jobs still waiting: {waiting}\n{self.worker_log.read_text()[-3000:]}")
                time.sleep(0.05)

    def check_all_done(self, *, final: bool, where: str = "") -> None:
        with self.world.connect() as conn:
            rows = conn.execute("SELECT id, type, status, error FROM haosq.jobs ORDER BY id").fetchall()
        undone = [r for r in rows if r["id"] not in self.world.given and r["status"] != "completed"
                  and (final or r["status"] in ("failed", "cancelled")
                       or _selected(r["type"], WORKER_FAMILIES))]
        assert undone == [], f"{self.path.name} {where}: jobs not completed: {undone}"


def _selected(job_type: str, selectors: list[str] | tuple[str, ...]) -> bool:
    family = job_type.split(":", 1)[0]
    return any(s in (job_type, family) for s in selectors)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


# -- the tests --------------------------------------------------------------------------------

@pytest.fixture
def peers(smtp_server, http_peer, tls_ca, clamd) -> dict[str, Any]:
    gateway = http_peer()
    gateway.respond = lambda request: (200, {"Content-Type": "application/json"}, b'{"rejected": []}')
    return {"smtp": smtp_server(), "gateway": gateway, "ca_bundle": tls_ca.bundle, "clamd": clamd}


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    made = World(tmp_path, database_url)
    yield made
    for data in made.embedded_dirs:
        subprocess.run([str(BIN / "haosq"), "db", "stop"], env={**made.env, "HAOSQ_DATA_DIR": str(data)},
                       capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def test_every_block_runs_or_says_why_not() -> None:
    problems = []
    for path in DOCUMENTS:
        for block in blocks(path):
            try:
                classify(block)
            except Unclassified as exc:
                problems.append(str(exc))
    assert problems == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_document_examples_run_as_written(document: Path, world: World, peers: dict[str, Any]) -> None:
    run = DocumentRun(world, document, peers)
    if not any(e.kind.startswith("run-") or e.kind in ("daemon", "file", "config-check")
               for e in run.examples):
        pytest.skip(f"{document.name} has no example that runs")
    if not NAMESPACES and "/srv/" in document.read_text():
        pytest.skip("the examples' /srv paths need a private mount namespace (unshare, as root)")
    run.run()
    if document.name == "README.md":
        check_readme(run, world, peers)


def check_readme(run: DocumentRun, world: World, peers: dict[str, Any]) -> None:
    """What the README's examples say they do, beyond exit codes and completed jobs."""
    from datetime import timedelta

    # Scheduled for later: the cleanup tomorrow (Python), in ten minutes, tomorrow at 03:00.
    ahead = sorted((job_type, delta) for _where, job_type, delta in run.scheduled)
    assert [t for t, _ in ahead] == ["cleanup:old-files", "cleanup:old-files", "email:send"], ahead
    assert all(delta >= timedelta(minutes=9) for _t, delta in ahead), ahead
    # The cleanup removed the old file below the root and kept the new one.
    tmp = world.srv / "uploads" / "tmp"
    assert not (tmp / "old.log").exists() and (tmp / "new.log").exists()
    # The upload was processed, its thumbnails written, and it was scanned.
    uploads = world.srv / "uploads"
    assert sorted(p.name for p in uploads.glob("image.thumb-*")) == ["image.thumb-128.webp",
                                                                   "image.thumb-512.webp"]
    with world.connect() as conn:
        rows = conn.execute("SELECT id, type, status, result FROM haosq.jobs ORDER BY id").fetchall()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_type.setdefault(row["type"], []).append(row)
    assert [r["result"]["status"] for r in by_type["file:virus-scan"]] == ["clean"]
    # Mail reached the SMTP server, one message per email:send, the transactional one too.
    sent = {r.rcpt_tos[0] for r in peers["smtp"].received}
    assert {"user@example.com", "a@example.com", "ann@example.com", "ops@example.com"} <= sent
    assert len(peers["gateway"].requests) >= 100  # one push per device of the add_many
    assert [r["result"] for r in by_type["my:process-data"]] == [{"success": True}]
    # The operator commands: 42 and 43 retried (and run again), 44 cancelled before its time.
    status = {r["id"]: r["status"] for r in rows}
    assert (status[42], status[43], status[44]) == ("completed", "completed", "cancelled")


def test_an_unmarked_block_the_test_cannot_run_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```ini\n[Service]\n```\n\n<!-- example: skip -->\n```bash\nsudo x\n```\n\n"
                   "<!-- example: skip: needs root -->\n```bash\nsudo x\n```\n\n"
                   "```\nno language\n```\n")
    unmarked_ini, reasonless, skipped, bare = blocks(doc)
    for block in (unmarked_ini, reasonless, bare):
        with pytest.raises(Unclassified):
            classify(block)
    assert classify(skipped).kind == "skip" and classify(skipped).arg == "needs root"
