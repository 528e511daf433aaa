"""email:batch throughput against a local aiosmtpd server: per-recipient checkpoints in
PostgreSQL (as the daemon runs it) and in memory (a context without a database), to show what
the crash-safety of a batch costs.

    python -m bench.email_batch [--messages 500] [--runs 3]

Prints one JSON line per mode (messages per second: median and spread).
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller

from bench.common import emit, machine, scratch_database, summary
from haosq.config import load_settings
from haosq.handlers.email import send_batch
from haosq.handlers.registry import JobContext, JobLogger
from haosq.queue import JobQueue


class CountingServer:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 OK"


class NoLogs:
    def write(self, job_id: int, attempt: int, level: str, message: str, metadata: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(queue: JobQueue, port: int, messages: int, durable: bool) -> float:
    payload = {"recipients": [{"to": f"user{i}@example.org", "variables": {"n": i}} for i in range(messages)],
               "subject": "Hello {{ n }}", "html": "<p>Number <b>{{ n }}</b></p>"}
    job = queue.add("email:batch", payload)
    settings = dataclasses.replace(queue.settings, sections={"handlers": {"smtp": {
        "url": f"smtp://127.0.0.1:{port}", "from": "bench@haosq.test"}}})
    ctx = JobContext(job=job, log=JobLogger(NoLogs(), job.id, 1), attempt=1, cancelled=threading.Event(),
                     settings=settings, database=queue.db if durable else None)
    started = time.perf_counter()
    result = send_batch(job.payload, ctx)
    elapsed = time.perf_counter() - started
    assert len(result["sent"]) == messages
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = CountingServer()
    port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with scratch_database() as url:
            settings = load_settings(env={"HAOSQ_DATABASE_URL": url, "HAOSQ_CONFIG": "/dev/null"})
            with JobQueue(settings=settings) as queue:
                for durable in (True, False):
                    rates = [run(queue, port, args.messages, durable) for _ in range(args.runs)]
                    emit("email_batch", checkpoints="postgresql" if durable else "memory",
                         messages=args.messages, messages_per_second=summary(rates), machine=machine(url))
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
