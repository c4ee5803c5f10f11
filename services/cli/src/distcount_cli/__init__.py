"""The `distcount` command."""

from distcount_cli._main import main

__all__ = ["main"]
