"""What every haosq screen shares: the connection banner, loading in thread workers, actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from haosq.errors import DatabaseUnavailable, HaosqError
from haosq.secrets import mask_text
from haosq.tui.format import plain, shown_exception, visible

if TYPE_CHECKING:
    from haosq.tui.app import HaosqApp

T = TypeVar("T")

# Actions that change the database: hidden (and refused) in read-only mode.
WRITE_ACTIONS = frozenset({
    "retry", "cancel", "bulk_retry", "bulk_cancel", "new_job", "cleanup_workers",
    "toggle_schedule", "run_schedule",
})


def is_connection_error(exc: BaseException) -> bool:
    """Errors that mean "the database is not reachable", as opposed to a refused action."""
    import psycopg

    return isinstance(exc, DatabaseUnavailable | psycopg.OperationalError | psycopg.InterfaceError)


class ConnectionBanner(Static):
    """A one-line warning while the database cannot be reached; hidden otherwise."""


class HaosqScreen(Screen[None]):
    """A top-level haosq screen."""

    @property
    def haosq(self) -> HaosqApp:
        return cast("HaosqApp", self.app)

    def compose_banner(self) -> ComposeResult:
        yield ConnectionBanner("", id="banner")

    def on_mount(self) -> None:
        self.watch(self.app, "db_error", self._show_banner)

    def _show_banner(self, error: str | None) -> None:
        for banner in self.query(ConnectionBanner):
            banner.update(plain(f"Database unreachable: {mask_text(error)} — reconnecting…" if error else ""))
            banner.set_class(bool(error), "-visible")

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        """Reload what the screen shows (in a worker); called on events and on a timer."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in WRITE_ACTIONS and self.haosq.read_only)

    def load(self, fetch: Callable[[], T], apply: Callable[[T], None], *, group: str = "load") -> None:
        """Run `fetch` in a thread worker, then `apply` its result on the event loop.

        A newer load of the same group supersedes an older one still running."""
        app = self.haosq

        def run() -> None:
            worker = get_current_worker()
            try:
                data = fetch()
            except Exception as exc:
                if not worker.is_cancelled:
                    app.call_from_thread(app.report_failure, exc)
                return
            if not worker.is_cancelled:
                app.call_from_thread(app.report_success)
                app.call_from_thread(apply, data)

        self.run_worker(run, thread=True, exclusive=True, group=group, exit_on_error=False)

    def act(self, perform: Callable[[], Any], done: Callable[[Any], str],
            after: Callable[[], None] | None = None) -> None:
        """Run a database action in a worker; report the outcome as a notification."""
        app = self.haosq

        def run() -> None:
            try:
                result = perform()
            except HaosqError as exc:
                if is_connection_error(exc):
                    app.call_from_thread(app.report_failure, exc)
                else:
                    app.call_from_thread(app.notify, shown_exception(exc), severity="error",
                                         timeout=6, markup=False)
                return
            except Exception as exc:
                app.call_from_thread(app.report_failure, exc)
                if not is_connection_error(exc):
                    app.call_from_thread(app.notify, shown_exception(exc), title="Action failed",
                                         severity="error", timeout=8, markup=False)
                return
            app.call_from_thread(app.notify, visible(done(result)), timeout=4, markup=False)
            if after is not None:
                app.call_from_thread(after)
            app.call_from_thread(app.request_refresh, True)

        self.run_worker(run, thread=True, group="action", exit_on_error=False)
