"""Shared pieces of the CLI commands: --home, settings, JSON output, one-line errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rawexport.catalog import CatalogError, Project
from rawexport.errors import UserError
from rawexport.export.actions import OpsError
from rawexport.node import Services
from rawexport.settings import Settings, SettingsError, load_settings
from rawexport.timeutil import BadDate

F = TypeVar("F", bound=Callable[..., Any])

# A UserError of any stage (a bad setting, date, file, command), or a catalog refusal.
USER_ERRORS = (UserError, CatalogError)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def home_option(f: F) -> F:
    return click.option(
        "--home",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="data directory (env RAWEXPORT_HOME, default ./rawexport-data)",
    )(f)


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    merged = dict(ctx.obj or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return load_settings(merged)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


def user_errors(f: F) -> F:
    """Turn user mistakes into one-line messages with exit code 1, never tracebacks."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BadDate as e:
            raise click.ClickException(f"bad date or hour: {e}") from None
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None

    return wrapper  # type: ignore[return-value]


def need_project(services: Services, ai: str) -> Project:
    project = services.catalog.project(ai)
    if project is None:
        raise OpsError(f"no project with ai {ai!r} in {services.settings.home}")
    return project
