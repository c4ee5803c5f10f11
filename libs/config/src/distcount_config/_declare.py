"""What a setting declaration says: its variable, kind, default, help, and whose it is.

The table in `_table` is made of these; validation (`_load`), the README's configuration tables
and `distcount dev status --env` (`_docs`) are all read off it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, Protocol, TypeVar

from distcount_config._kinds import DatabaseUrl, Kind

PREFIX: Final = "DISTCOUNT_"

T = TypeVar("T")

_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@]*@")
# a URL written without its scheme (a mistake an error message shows) may still hold one
_BARE_PASSWORD_RE = re.compile(r"^([^:/@]*:)[^@]*@")
# libpq's URLs may carry passwords in their query string too
_QUERY_PASSWORD_RE = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


class Scope(Enum):
    """Whose setting it is: `load()` builds the services' `Settings`, `load_dev()` the local
    stack's `DevSettings`."""

    SERVICES = "services"
    DEV = "dev"


class Values(Protocol):
    """What a derived default or a rule may look at while the settings are read."""

    def get(self, setting: Setting[T]) -> T: ...

    def is_set(self, setting: Setting[Any]) -> bool:
        """Whether its variable holds something other than blanks."""
        ...

    def machine(self, name: str) -> str | None:
        """A variable of the machine's that is no setting, such as XDG_CACHE_HOME."""
        ...


@dataclass(frozen=True)
class Derived(Generic[T]):
    """A default computed from other settings when the settings are read."""

    compute: Callable[[Values], T]
    described: str  # for the README's default column (Markdown)


@dataclass(frozen=True, eq=False)
class Setting(Generic[T]):
    name: str  # the variable without DISTCOUNT_
    kind: Kind[T]
    default: T | Derived[T]
    help: str  # for the README's meaning column (Markdown)
    scope: Scope
    field: str  # the attribute that holds it: "http_port", "metrics.reporter", "state_dir"
    # never in an error message or printed: a URL's password is hidden, anything else whole
    secret: bool = False
    exported: bool = False  # an endpoint `distcount dev status --env` prints

    @property
    def variable(self) -> str:
        return PREFIX + self.name

    def shown(self, value: T) -> str:
        """The value as its variable holds it, its password hidden if it is secret."""
        text = self.kind.show(value)
        return self.hidden(text) if self.secret else text

    def hidden(self, text: str) -> str:
        """`text`, a value of this secret setting, as it may be shown: a URL without its
        passwords, which says where it leads; any other secret (a password, a token) as ***."""
        if isinstance(self.kind, DatabaseUrl):
            return redact(text)
        return "***" if text else ""

    def show_in(self, settings: object) -> str:
        """Its value in `settings` (of its scope) as its variable would hold it."""
        value: T = operator.attrgetter(self.field)(settings)
        return self.kind.show(value)


@dataclass(frozen=True)
class Rule:
    """A condition between settings that none of them can check alone."""

    scope: Scope
    broken: Callable[[Values], bool]
    message: str


def redact(text: str) -> str:
    """`text` with the passwords of a URL in it replaced by ***."""
    userinfo = _PASSWORD_RE if "://" in text else _BARE_PASSWORD_RE
    return _QUERY_PASSWORD_RE.sub(r"\1***", userinfo.sub(r"\1***@", text))
