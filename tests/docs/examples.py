"""The code blocks of README.md and docs/*.md, and what the docs test does with each.

A block is classified by its fence's language, or by a marker: an HTML comment on the line
just before the fence (blank lines between are allowed), which the rendered Markdown hides.

    <!-- example: output -->            an output sample or a data structure: not run
    <!-- example: skip: REASON -->      not run here; REASON says why (root, systemd, the
                                        network, an interactive terminal, another program's file)
    <!-- example: file PATH -->         the content of a file the later blocks use, written to
                                        PATH in the project directory (or under ~/); a Python
                                        file is also imported there
    <!-- example: config -->            the configuration the document's examples need: written
                                        to ~/.config/haosq/haosq.toml, and the worker that runs
                                        the examples' jobs uses it (its peers pointed at the
                                        test's own: SMTP, push gateway, clamd)
    <!-- example: daemon -->            runs until stopped (a worker): started in the
                                        background, it must become ready and run the pending
                                        jobs of its types, then SIGTERM must stop it with exit 0
    <!-- example: embedded -->          runs against the embedded server (no database URL)
    <!-- example: given jobs 42 43 (failed) 44 (scheduled) -->
                                        the jobs an example acts on are put in that state first

Without a marker: `python` blocks run as a script, `bash`/`sh` blocks as a bash script with
`set -e -o pipefail`, `sql` blocks on a connection to the database (an `add_job` must return
the id of a new job), and `toml` blocks are checked with `haosq config check`. Any other
block without a marker fails the test: each block either runs or says why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell",
             "sql": "sql", "toml": "toml"}
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<text>.*?)\s*-->\s*$")
GIVEN = re.compile(r"(?P<ids>\d+(?:\s+\d+)*)\s+\((?P<state>failed|scheduled)\)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


@dataclass
class Example:
    """What the test does with one block."""

    block: Block
    kind: str  # run-python, run-shell, run-sql, config-check, file, config, daemon, output, skip
    arg: str = ""
    embedded: bool = False
    given: dict[int, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return self.block.where


class Unclassified(Exception):
    """A block that neither runs nor says why not."""


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = len(fence["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        marker = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (match := MARKER.match(lines[j])):
            marker = match["text"]
        found.append(Block(path, start + 1, fence["lang"].lower(), "\n".join(body) + "\n", marker))
        i += 1
    return found


def classify(block: Block) -> Example:
    marker = block.marker or ""
    if marker == "output":
        return Example(block, "output")
    if marker.startswith("skip"):
        reason = marker.removeprefix("skip").lstrip(":").strip()
        if not reason:
            raise Unclassified(f"{block.where}: a skipped example must say why (skip: REASON)")
        return Example(block, "skip", reason)
    if marker.startswith("file "):
        return Example(block, "file", marker.removeprefix("file ").strip())
    if marker == "config":
        return Example(block, "config")
    language = LANGUAGES.get(block.lang)
    if marker == "daemon":
        if language not in ("python", "shell"):
            raise Unclassified(f"{block.where}: a daemon example must be python or bash")
        return Example(block, "daemon", language)
    given: dict[int, str] = {}
    embedded = False
    if marker == "embedded":
        embedded = True
    elif marker.startswith("given jobs "):
        for match in GIVEN.finditer(marker):
            for job_id in match["ids"].split():
                given[int(job_id)] = match["state"]
        if not given:
            raise Unclassified(f"{block.where}: cannot read {marker!r} (given jobs 42 43 (failed) ...)")
    elif marker:
        raise Unclassified(f"{block.where}: unknown marker {marker!r}")
    if language is None:
        raise Unclassified(
            f"{block.where}: a ```{block.lang or '(no language)'} block that the test cannot run: "
            "mark it (<!-- example: output -->, <!-- example: skip: REASON -->, ...)")
    kind = {"python": "run-python", "shell": "run-shell", "sql": "run-sql", "toml": "config-check"}[language]
    return Example(block, kind, embedded=embedded, given=given)


def examples(path: Path) -> list[Example]:
    return [classify(block) for block in blocks(path)]
