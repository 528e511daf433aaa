"""The worker daemon: claim loop, execution, scheduler and process lifecycle."""
