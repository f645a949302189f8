"""Placeholder: scene commands (sample, graph2usd) land with the foundation issue."""

import typer


def register(app: typer.Typer) -> None:
    pass
