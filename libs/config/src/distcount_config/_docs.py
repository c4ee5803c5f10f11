"""What is written from the table: the README's configuration tables and the `export` lines of
`distcount dev status --env`."""

from __future__ import annotations

import shlex
from typing import Any, Final

from distcount_config._declare import Derived, Scope, Setting
from distcount_config._load import url_passwords
from distcount_config._settings import LOCAL_PASSWORDS, Settings
from distcount_config._table import SETTINGS

# the README's generated block lies between these two lines
BEGIN: Final = (
    "<!-- generated from libs/config/src/distcount_config/_table.py by "
    "`uv run python -m distcount_config --write README.md`: edit the table, not this -->"
)
END: Final = "<!-- end of the generated settings tables -->"

_INTRODUCTIONS: Final = {
    Scope.SERVICES: "Read by the services and by every `distcount` command:",
    Scope.DEV: (
        "The local stack's, read by `distcount dev` (and by `distcount migrate`, to find the local "
        "database): no part of the services' settings, though their default endpoints follow "
        "its ports:"
    ),
}


def export_lines(settings: Settings) -> list[str]:
    """`export DISTCOUNT_…=…` for every setting the table marks as an endpoint, each with its
    value in `settings`, quoted for a POSIX shell. A secret is printed only when it is the
    local stack's own (its passwords are public); one of the user's is a comment, hidden: it
    is in the user's environment already, and must not land in a terminal's scrollback."""
    lines = []
    for setting in SETTINGS:
        if not setting.exported:
            continue
        value = setting.show_in(settings)
        if setting.secret and not _local_secret(value):
            lines.append(
                f"# {setting.variable}={setting.hidden(value)} is your own "
                "secret, not printed: keep the value your environment has"
            )
        else:
            lines.append(f"export {setting.variable}={shlex.quote(value)}")
    return lines


def _local_secret(value: str) -> bool:
    if "://" not in value:
        return False
    return all(password in LOCAL_PASSWORDS for password in url_passwords(value))


def markdown() -> str:
    """The README's configuration tables, one per scope, between the BEGIN and END lines."""
    parts = [BEGIN]
    for scope in Scope:
        parts += ["", _INTRODUCTIONS[scope], ""]
        parts += ["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
        parts += [_row(setting) for setting in SETTINGS if setting.scope is scope]
    parts += ["", END]
    return "\n".join(parts) + "\n"


def with_tables(readme: str) -> str:
    """`readme` with its generated block replaced by `markdown()`."""
    start = readme.find(BEGIN)
    end = readme.find(END, max(start, 0))
    if start < 0 or end < 0:
        raise ValueError(f"no generated block: the README must hold the lines {BEGIN} and {END}")
    return readme[:start] + markdown() + readme[end + len(END) + 1 :]


def _row(setting: Setting[Any]) -> str:
    if isinstance(setting.default, Derived):
        default = setting.default.described
    else:
        shown = setting.kind.show(setting.default)
        default = f"`{shown}`" if shown else "none"
    cells = (f"`{setting.variable}`", default, setting.kind.accepts, setting.help)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
