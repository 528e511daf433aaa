"""The real `haosq-tui` in a real terminal (tmux): type keys, read the screen."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.badinput.hostile import insert_hostile_rows
from tests.tui.conftest import load_fixed_data

TMUX = shutil.which("tmux")


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=False).stdout


def wait_for(session: str, *texts: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if all(text in screen for text in texts):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{texts!r} never appeared; the screen was:\n{screen}")


def start_tui(cli_env: dict[str, str]) -> str:
    assert TMUX, "tmux is installed by .ci/system-deps"
    session = f"haosq-tui-{uuid.uuid4().hex[:8]}"
    command = [str(Path(sys.executable).parent / "haosq-tui"), "--refresh-interval", "1"]
    env = {**cli_env, "TERM": "xterm-256color"}
    passed = [f"{k}={v}" for k, v in env.items() if k.startswith(("HAOSQ_", "PATH", "HOME", "TERM", "LANG"))]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "32",
                    "env", *passed, *command], check=True)
    return session


@pytest.fixture
def tmux_session(cli_env: dict[str, str]) -> Iterator[str]:
    session = start_tui(cli_env)
    yield session
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


def test_haosq_tui_in_a_real_terminal(tmux_session, conn) -> None:
    ids = load_fixed_data(conn)
    session = tmux_session
    wait_for(session, "Dashboard", "pending", "email:send")
    subprocess.run(["tmux", "send-keys", "-t", session, "j"], check=True)
    screen = wait_for(session, "newest first", "cleanup:prune", "failed")
    assert str(ids["scheduled"]) in screen
    subprocess.run(["tmux", "send-keys", "-t", session, "?"], check=True)
    wait_for(session, "Keys", "Retry")
    subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
    # A job added while the app runs shows up on its own (NOTIFY, or the 1 s refresh).
    conn.execute("INSERT INTO haosq.jobs (type) VALUES ('report:weekly')")
    wait_for(session, "report:weekly")
    subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode
        if alive != 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("haosq-tui did not quit on q")


def test_haosq_tui_commands_need_a_terminal(cli_env) -> None:
    bin_dir = Path(sys.executable).parent
    for command in ([str(bin_dir / "haosq-tui")], [str(bin_dir / "haosq"), "tui"]):
        done = subprocess.run([*command, "--read-only"], env=cli_env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        assert "needs a terminal" in done.stderr
        assert "Traceback" not in done.stderr
    shown = subprocess.run([str(bin_dir / "haosq"), "tui", "--help"], env=cli_env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0 and "--read-only" in shown.stdout and "--refresh-interval" in shown.stdout


def test_stored_markup_and_escapes_reach_a_real_terminal_as_text(cli_env, conn) -> None:
    """What the terminal really received: `[link=...]` as text (not a hyperlink), the escape
    character as the four characters \\x1b (not a colour change)."""
    insert_hostile_rows(conn)
    session = start_tui(cli_env)
    try:
        wait_for(session, "Dashboard")
        subprocess.run(["tmux", "send-keys", "-t", session, "j"], check=True)
        wait_for(session, "-infinity", "demo:[bold]b [/]")  # the rows on either side load too
        # The failed job is the last row: open its detail.
        subprocess.run(["tmux", "send-keys", "-t", session, "Down", "Down", "Down", "Enter"], check=True)
        wait_for(session, "Job 1", "[link=https://x]", "[/]\\x1b[31m", "[bold]w\\x1b[31m",
                 '"[/]": "\\u001b[31m"')
        with_escapes = subprocess.run(["tmux", "capture-pane", "-p", "-e", "-t", session],
                                      capture_output=True, text=True, check=False).stdout
        assert "\x1b]8;" not in with_escapes  # no OSC 8 hyperlink was sent
        assert "\x1b[31mred" not in with_escapes
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
