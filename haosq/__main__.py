"""`python -m haosq` runs the command line."""

from haosq.cli import main

main()
