"""The SQL haosq runs, grouped by concern. Nothing outside this package writes SQL."""
