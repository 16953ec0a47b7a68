"""How the ``solulab`` commands report bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import functools

import typer

from solulab.errors import SolulabError


def reports_errors(command):
    """Turn a ``SolulabError`` into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SolulabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper
