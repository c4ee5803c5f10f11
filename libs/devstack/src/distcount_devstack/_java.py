"""Finds a Java runtime able to run the Kafka broker (17 or newer)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from distcount_devstack._errors import DevStackError

MIN_JAVA = 17
_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


def find_java(java_home: Path | None) -> Path:
    if java_home is not None:
        candidate = java_home / "bin" / "java"
        if not candidate.is_file():
            raise DevStackError(
                f"JAVA_HOME is {java_home}, but {candidate} does not exist; point JAVA_HOME at "
                f"a Java {MIN_JAVA}+ installation or unset it"
            )
        return candidate
    found = shutil.which("java")
    if found is None:
        raise DevStackError(
            f"the Kafka broker needs Java {MIN_JAVA} or newer, and no java was found (no "
            "JAVA_HOME, none on PATH); install one (Debian: apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return Path(found)


def java_major(java: Path) -> int:
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise DevStackError(f"cannot run {java}: {exc}") from exc
    match = _VERSION_RE.search(result.stderr + result.stdout)
    if match is None:
        raise DevStackError(f"cannot tell the version of {java}: {result.stderr.strip()!r}")
    major = int(match[1])
    # Java 8 and older call themselves 1.x
    return int(match[2] or 0) if major == 1 else major


def checked_java(java_home: Path | None) -> Path:
    java = find_java(java_home)
    major = java_major(java)
    if major < MIN_JAVA:
        raise DevStackError(
            f"the Kafka broker needs Java {MIN_JAVA} or newer, but {java} is Java {major}; "
            f"install a newer one and point JAVA_HOME at it"
        )
    return java
