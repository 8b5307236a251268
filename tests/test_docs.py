"""The README documents every setting and every command."""

from pathlib import Path

import click

from rawexport.cli import main
from rawexport.settings import SETTINGS_HELP

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:400]
    assert "make run" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    for name in SETTINGS_HELP:
        assert f"`{name}`" in README, name
        assert f"RAWEXPORT_{name.upper()}" in README, name


def _commands(group: click.Group, prefix: str) -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out += _commands(cmd, full)
        else:
            out.append(full)
    return out


def test_every_command_is_documented() -> None:
    for command in _commands(main, "rawexport"):
        assert f"`{command}" in README, command
