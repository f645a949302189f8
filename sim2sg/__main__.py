"""`python -m sim2sg ...` runs the command line (same as the `sim2sg` script)."""

from sim2sg.cli.app import main

main()
