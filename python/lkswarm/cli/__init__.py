"""Layer 7, the command line (typer): `main` parses, `reports` handles ``report``/``merge``, `output` prints."""

from lkswarm.cli.commands import app, main

__all__ = ["app", "main"]
