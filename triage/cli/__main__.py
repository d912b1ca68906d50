"""`python -m triage.cli` runs the command line (same as the `triage` script)."""

from triage.cli.app import main

main()
