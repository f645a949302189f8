"""docs/cli.md is the CLI reference generated from the Typer app; it must match the app."""

from pathlib import Path

from sim2sg.cli.reference import reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/cli.md is out of date with the Typer app: regenerate it with "
        "`python -m sim2sg.cli.reference > docs/cli.md`"
    )


def test_reference_lists_every_command_and_option():
    import typer
    from sim2sg.cli.app import app

    text = reference_markdown()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert f"## `sim2sg {name}`" in text
        for p in command.params:
            for opt in p.opts:
                if opt.startswith("-"):
                    assert f"`{opt}`" in text, (name, opt)
