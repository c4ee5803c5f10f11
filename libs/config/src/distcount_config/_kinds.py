"""The kinds of value a setting holds: how each is read from its variable, what an error says it
accepts (the README's "accepts" column too), and how a value is written back as a variable.

`parse` gets the variable's value without surrounding blanks and raises `ValueError` when it is
not one of its kind; the message, if any, is the detail an error adds after what is accepted.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,199}")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class Kind(ABC, Generic[T]):
    @property
    @abstractmethod
    def accepts(self) -> str:
        """What a value must be, as the error message and the README say it."""

    @abstractmethod
    def parse(self, raw: str) -> T: ...

    def show(self, value: T) -> str:
        """The value as its variable would hold it: `parse(show(v)) == v`."""
        return str(value)


@dataclass(frozen=True)
class Integer(Kind[int]):
    low: int
    high: int
    unit: str = "an integer"  # or what it counts: "milliseconds", "bytes", "a TCP port"

    @property
    def accepts(self) -> str:
        return f"{self.unit} {self.low}..{self.high}"

    def parse(self, raw: str) -> int:
        try:
            value = int(raw.replace("_", ""), 10)
        except ValueError:
            raise ValueError("not a whole number") from None
        if not self.low <= value <= self.high:
            raise ValueError("out of range")
        return value


def port(protocol: str = "TCP") -> Integer:
    return Integer(1, 65535, f"a {protocol} port")


@dataclass(frozen=True)
class Seconds(Kind[float]):
    @property
    def accepts(self) -> str:
        return "seconds, above 0"

    def parse(self, raw: str) -> float:
        value = float(raw)
        # "inf" and "nan" are floats too, and would wait forever
        if not (value > 0 and math.isfinite(value)):
            raise ValueError("must be a finite number above 0")
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Fraction(Kind[float]):
    low: float
    high: float
    example: float

    @property
    def accepts(self) -> str:
        return f"a fraction {self.low:g}..{self.high:g}, such as {self.example:g}"

    def parse(self, raw: str) -> float:
        value = float(raw)
        if not self.low <= value <= self.high:  # also refuses nan
            raise ValueError("out of range")
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Switch(Kind[bool]):
    @property
    def accepts(self) -> str:
        return "on or off"

    def parse(self, raw: str) -> bool:
        value = raw.lower()
        if value not in ("on", "off"):
            raise ValueError("")
        return value == "on"

    def show(self, value: bool) -> str:
        return "on" if value else "off"


@dataclass(frozen=True)
class Choice(Kind[str]):
    options: tuple[str, ...]

    @property
    def accepts(self) -> str:
        return " or ".join(self.options)

    def parse(self, raw: str) -> str:
        # in any case, read as the option is spelled (SASL_SSL, zstd)
        for option in self.options:
            if raw.lower() == option.lower():
                return option
        raise ValueError("")


@dataclass(frozen=True)
class ChoiceOrNone(Kind[str | None]):
    """One of `options`, or `none_name`, which is read as None."""

    none_name: str
    options: tuple[str, ...]

    @property
    def accepts(self) -> str:
        return " or ".join((self.none_name, *self.options))

    def parse(self, raw: str) -> str | None:
        name = Choice((self.none_name, *self.options)).parse(raw)
        return None if name == self.none_name else name

    def show(self, value: str | None) -> str:
        return self.none_name if value is None else value


@dataclass(frozen=True)
class OrUnset(Kind[T | None]):
    """A value of `inner`'s kind, or none at all (None): left unset, the choice is someone
    else's (a package's own files, a tool's own settings)."""

    inner: Kind[T]

    @property
    def accepts(self) -> str:
        return self.inner.accepts

    def parse(self, raw: str) -> T | None:
        return self.inner.parse(raw) if raw else None

    def show(self, value: T | None) -> str:
        return "" if value is None else self.inner.show(value)


@dataclass(frozen=True)
class Host(Kind[str]):
    @property
    def accepts(self) -> str:
        return "a host name or address"

    def parse(self, raw: str) -> str:
        if not _HOST_RE.fullmatch(raw):
            raise ValueError("not a host name or address")
        return raw


@dataclass(frozen=True)
class Bootstrap(Kind[str]):
    @property
    def accepts(self) -> str:
        return "host:port[,host:port...]"

    def parse(self, raw: str) -> str:
        servers = [server.strip() for server in raw.split(",")]
        for server in servers:
            host, sep, number = server.rpartition(":")
            if not sep or not host:
                raise ValueError(f"{server!r} has no port")
            Host().parse(host)
            port().parse(number)
        return ",".join(servers)


@dataclass(frozen=True)
class DatabaseUrl(Kind[str]):
    @property
    def accepts(self) -> str:
        return "postgresql://user:password@host:port/database"

    def parse(self, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("the scheme must be postgresql://")
        if not parts.hostname:
            raise ValueError("no host")
        if parts.path.strip("/") == "":
            raise ValueError("no database name")
        _ = parts.port  # raises ValueError for a port that is not one
        return raw


@dataclass(frozen=True)
class Topic(Kind[str]):
    @property
    def accepts(self) -> str:
        return "a Kafka topic name"

    def parse(self, raw: str) -> str:
        if not _TOPIC_RE.fullmatch(raw) or raw in (".", ".."):
            raise ValueError("1..249 characters of letters, digits, '.', '_' and '-'")
        return raw


@dataclass(frozen=True)
class Name(Kind[str]):
    what: str
    max_length: int

    @property
    def accepts(self) -> str:
        return self.what

    def parse(self, raw: str) -> str:
        if len(raw) > self.max_length:
            raise ValueError(f"longer than {self.max_length} characters")
        return raw


@dataclass(frozen=True)
class Tags(Kind[tuple[str, ...]]):
    @property
    def accepts(self) -> str:
        return (
            "comma-separated DogStatsD tags such as env:prod,region:eu (letters, digits, "
            "_ . : / -, starting with a letter)"
        )

    def parse(self, raw: str) -> tuple[str, ...]:
        tags = tuple(tag.strip() for tag in raw.split(",") if tag.strip())
        for tag in tags:
            if not _TAG_RE.fullmatch(tag):
                raise ValueError(f"{tag!r} is not a tag")
        return tags

    def show(self, value: tuple[str, ...]) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class Version(Kind[str]):
    @property
    def accepts(self) -> str:
        return "a version such as 4.1.1"

    def parse(self, raw: str) -> str:
        if not _VERSION_RE.fullmatch(raw):
            raise ValueError("")
        return raw


@dataclass(frozen=True)
class HttpUrl(Kind[str]):
    @property
    def accepts(self) -> str:
        return "an http:// or https:// URL such as http://127.0.0.1:3333"

    def parse(self, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https"):
            raise ValueError("the scheme must be http:// or https://")
        if not parts.hostname:
            raise ValueError("no host")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment")
        _ = parts.port  # raises ValueError for a port that is not one
        return raw.rstrip("/")


@dataclass(frozen=True)
class RepositoryUrl(Kind[str]):
    @property
    def accepts(self) -> str:
        return "an http(s):// or file:// URL of a Maven repository"

    def parse(self, raw: str) -> str:
        if urlsplit(raw).scheme not in ("http", "https", "file"):
            raise ValueError("")
        return raw.rstrip("/")


@dataclass(frozen=True)
class File(Kind[Path]):
    """A file that exists when the settings are read: a missing certificate is a startup
    error naming its variable, not a handshake failure later."""

    what: str = "a file path"

    @property
    def accepts(self) -> str:
        return self.what

    def parse(self, raw: str) -> Path:
        path = Path(raw).expanduser().resolve()
        if not path.is_file():
            raise ValueError("no such file")
        return path


def token_hash(token: str) -> str:
    """How a bearer token is written in DISTCOUNT_*_TOKEN_HASHES: `sha256:<64 hex digits>` of
    its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenHashes(Kind[tuple[str, ...]]):
    """SHA-256 digests of bearer tokens, as lowercase hex; each may carry a `sha256:` prefix,
    as `distcount token new` prints it."""

    @property
    def accepts(self) -> str:
        return (
            "comma-separated SHA-256 digests of tokens, 64 hex digits each, optionally written "
            "sha256:<hex> (`distcount token new` prints one)"
        )

    def parse(self, raw: str) -> tuple[str, ...]:
        digests = []
        for number, item in enumerate((part.strip() for part in raw.split(",")), 1):
            if not item:
                continue
            digest = item.lower().removeprefix("sha256:")
            if not _DIGEST_RE.fullmatch(digest):
                # the item itself is not shown: it may be a token pasted here by mistake
                raise ValueError(
                    f"item {number} is not 64 hex digits (a token goes in a client's "
                    "settings; here goes its hash)"
                )
            digests.append(digest)
        return tuple(dict.fromkeys(digests))

    def show(self, value: tuple[str, ...]) -> str:
        return ",".join(f"sha256:{digest}" for digest in value)


@dataclass(frozen=True)
class Folder(Kind[Path]):
    what: str = "a folder path"

    @property
    def accepts(self) -> str:
        return self.what

    def parse(self, raw: str) -> Path:
        return Path(raw).expanduser().resolve()
