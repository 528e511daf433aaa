"""haosq-tui: watch the queue and act on it, keyboard first, over SSH.

The app is given its data source, clock and refresh timing, so that tests drive it with a
test database and a frozen clock. Loads run in thread workers; NOTIFY on haosq_jobs /
haosq_events asks for a refresh (at most one per `min_refresh` seconds, so a busy queue does
not turn into a redraw storm) and a timer refreshes every `refresh_interval` seconds anyway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from haosq.clock import Clock, SystemClock
from haosq.tui.data import PostgresSource
from haosq.tui.format import shown_exception
from haosq.tui.screens.base import HaosqScreen, is_connection_error
from haosq.tui.screens.dashboard import DashboardScreen
from haosq.tui.screens.detail import JobDetailScreen
from haosq.tui.screens.help import HelpScreen
from haosq.tui.screens.jobs import JobsScreen
from haosq.tui.screens.schedules import SchedulesScreen
from haosq.tui.screens.workers import WorkersScreen

RECONNECT_SECONDS = 2.0


class HaosqApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "haosq"
    ENABLE_COMMAND_PALETTE = True
    MODES = {
        "dashboard": DashboardScreen,
        "jobs": JobsScreen,
        "workers": WorkersScreen,
        "schedules": SchedulesScreen,
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS = [
        Binding("1,d", "switch_mode('dashboard')", "Dash", tooltip="Dashboard"),
        Binding("2,j", "switch_mode('jobs')", "Jobs"),
        Binding("3,w", "switch_mode('workers')", "Workers"),
        Binding("4", "switch_mode('schedules')", "Sched", tooltip="Schedules"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+r", "refresh_now", "Refresh", show=False),
        Binding("q", "quit", "Quit"),
    ]

    db_error: reactive[str | None] = reactive(None)

    def __init__(
        self,
        source: PostgresSource,
        *,
        clock: Clock | None = None,
        refresh_interval: float = 5.0,
        min_refresh: float = 1.0,
        read_only: bool = False,
        live: bool = True,
    ) -> None:
        super().__init__()
        self.source = source
        self.clock = clock or SystemClock()
        self.refresh_interval = refresh_interval
        self.min_refresh = min_refresh
        self.read_only = read_only
        self.live = live
        self._last_refresh = 0.0
        self._pending_refresh: Timer | None = None
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        if read_only:
            self.sub_title = "read-only"

    def on_mount(self) -> None:
        if self.live:
            self._listener = threading.Thread(
                target=self.source.listen, name="haosq-tui-listen", daemon=True,
                args=(self._db_notified, self._stop, self._listen_state_changed),
            )
            self._listener.start()
        if self.refresh_interval > 0:
            self.set_interval(self.refresh_interval, self.request_refresh)

    def on_unmount(self) -> None:
        self._stop.set()
        self.source.close()

    # -- refresh -----------------------------------------------------------------------

    def _db_notified(self, channel: str, payload: str) -> None:
        self._from_thread(self.request_refresh)

    def _listen_state_changed(self, error: str | None) -> None:
        if error:
            self._from_thread(self._set_error, error)

    def _from_thread(self, callback: object, *args: object) -> None:
        if self._stop.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the app is shutting down
            self.call_from_thread(callback, *args)  # type: ignore[arg-type]

    def request_refresh(self, now: bool = False) -> None:
        """Refresh the current screen, coalescing bursts of events into one load."""
        wait = self.min_refresh - (time.monotonic() - self._last_refresh)
        if now or wait <= 0:
            self._refresh_screen()
        elif self._pending_refresh is None:
            self._pending_refresh = self.set_timer(wait, self._refresh_screen)

    def _refresh_screen(self) -> None:
        self._pending_refresh = None
        self._last_refresh = time.monotonic()
        for screen in reversed(self.screen_stack):
            if isinstance(screen, HaosqScreen):
                screen.refresh_data()
                return

    def action_refresh_now(self) -> None:
        self.request_refresh(True)

    def report_failure(self, exc: BaseException) -> None:
        if is_connection_error(exc):
            self._set_error(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        else:
            self.notify(shown_exception(exc), title="Error", severity="error", timeout=8, markup=False)

    def _set_error(self, error: str) -> None:
        self.db_error = error
        self.set_timer(RECONNECT_SECONDS, partial(self.request_refresh, True))

    def report_success(self) -> None:
        if self.db_error is not None:
            self.db_error = None

    # -- navigation and help ---------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        sections = [
            ("Everywhere", list(self.BINDINGS)),
            ("Jobs", list(JobsScreen.BINDINGS)),
            ("Job detail", list(JobDetailScreen.BINDINGS)),
            ("Workers", list(WorkersScreen.BINDINGS)),
            ("Schedules", list(SchedulesScreen.BINDINGS)),
        ]
        self.push_screen(HelpScreen(sections, self.read_only))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode in self.MODES:
            yield SystemCommand(f"Go to {mode}", f"Show the {mode} screen",
                                partial(self.switch_mode, mode))
        yield SystemCommand("Help", "Every key of every screen", self.action_help)
        yield SystemCommand("Refresh", "Reload the current screen now", self.action_refresh_now)
        for binding in getattr(screen, "BINDINGS", []):
            if not isinstance(binding, Binding) or not binding.description:
                continue
            action = binding.action
            if screen.check_action(action.split("(")[0], ()) is False:
                continue
            title = binding.tooltip or binding.description
            yield SystemCommand(title, f"{title} (key {binding.key})",
                                partial(self.run_action, action, screen))
