"""The `sim2sg` command line: a thin Typer layer over the library (installed as `sim2sg.cli`)."""
