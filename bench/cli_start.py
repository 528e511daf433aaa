"""How long the `haosq` command takes to start and answer, as a whole process, as JSON lines.

    python -m bench.cli_start --runs 10                      # this tree
    python -m bench.cli_start --runs 10 --baseline 2639240   # and an earlier commit, side by side

Three commands, each run as a fresh process against a real (scratch) database: `haosq --help`,
`haosq add demo:echo` and `haosq jobs list`. Each run is timed from spawn to exit: wall time on
the monotonic clock, CPU time (user + system) from the child's own rusage (`os.wait4`). Runs of
the trees and commands are interleaved so that a busy moment of the machine spreads over all of
them; the figures are the median and spread of `--runs` runs.

`--baseline REV` extracts that commit of the repository (`git archive`) into a temporary
directory and runs it with the same interpreter and dependencies, each tree in its own scratch
database migrated by its own code. Both trees are imported from source through PYTHONPATH, the
way the console script imports the installed package.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.common import emit, scratch_database, summary

ROOT = Path(__file__).resolve().parents[1]
# What the `haosq` console script runs.
ENTRY = "import sys; from haosq.cli import main; sys.exit(main())"
COMMANDS: dict[str, list[str]] = {
    "help": ["--help"],
    "add": ["add", "demo:echo", "--payload", '{"n": 1}'],
    "jobs_list": ["jobs", "list", "--limit", "20"],
}
TARGET_SECONDS = 0.25


@contextmanager
def extracted(revision: str) -> Iterator[Path]:
    """The tree of `revision` in a temporary directory."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "haosq"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="haosq-cli-start-") as directory:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield Path(directory)


def environment(tree: Path, url: str, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAOSQ_", "JOB_QUEUE_")) and k != "DATABASE_URL"}
    env.update(PYTHONPATH=str(tree), HAOSQ_DATABASE_URL=url, HAOSQ_CONFIG=str(config),
               COLUMNS="120")
    return env


def run_once(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole `haosq` process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    error = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"haosq {' '.join(args)} exited with {proc.returncode}: {error}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", metavar="REV", help="also time this commit (before/after)")
    args = parser.parse_args()

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="haosq-cli-cwd-")))
        config = work / "empty.toml"
        config.write_text("")
        trees = {"after": ROOT}
        if args.baseline:
            trees = {"before": stack.enter_context(extracted(args.baseline)), **trees}
        envs = {}
        for name, tree in trees.items():
            url = stack.enter_context(scratch_database(migrated=False))
            envs[name] = environment(tree, url, config)
            run_once(["migrate"], envs[name], work)  # each tree migrates its own database
            for command in COMMANDS.values():
                run_once(command, envs[name], work)  # warm the page cache and the .pyc files
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {
            (tree, command): [] for tree in trees for command in COMMANDS}
        for _ in range(args.runs):
            for command, argv in COMMANDS.items():
                for tree in trees:
                    samples[tree, command].append(run_once(argv, envs[tree], work))

    lines = []
    for (tree, command), runs in samples.items():
        wall, cpu = summary([w for w, _ in runs]), summary([c for _, c in runs])
        emit(f"cli_start.{command}", tree=tree,
             revision=args.baseline if tree == "before" else "working tree",
             command="haosq " + " ".join(COMMANDS[command]),
             wall_s={k: round(v, 4) for k, v in wall.items()},
             cpu_s={k: round(v, 4) for k, v in cpu.items()}, target_s=TARGET_SECONDS)
        lines.append(f"{tree:>6}  haosq {' '.join(COMMANDS[command])[:40]:<40}  "
                     f"wall {wall['median']:.3f} s  cpu {cpu['median']:.3f} s")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
