"""Unit tests for distcount_devstack._java, using fake `java` executables (shell scripts)."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from distcount_devstack import DevStackError
from distcount_devstack._java import MIN_JAVA, checked_java, find_java, java_major


def _fake_java_home(root: Path, version_line: str, *, to_stdout: bool = False) -> Path:
    """A JAVA_HOME whose bin/java prints `version_line` the way `java -version` does."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True, exist_ok=True)
    redirect = "" if to_stdout else " >&2"
    java.write_text(
        "#!/bin/sh\n"
        f"echo {shlex.quote(version_line)}{redirect}\n"
        "echo 'OpenJDK Runtime Environment (build x)'" + redirect + "\n",
        encoding="utf-8",
    )
    java.chmod(java.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


@pytest.mark.parametrize(
    ("version_line", "major"),
    [
        ('openjdk version "11.0.22" 2024-01-16', 11),
        ('openjdk version "1.8.0_392"', 8),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "25-ea" 2025-09-16', 25),
    ],
)
def test_java_major(tmp_path: Path, version_line: str, major: int) -> None:
    home = _fake_java_home(tmp_path, version_line)
    assert java_major(home / "bin" / "java") == major


def test_java_major_reads_stdout_too(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path, 'openjdk version "17.0.1"', to_stdout=True)
    assert java_major(home / "bin" / "java") == 17


def test_java_major_unparsable_output(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path, "this is not java")
    java = home / "bin" / "java"
    with pytest.raises(DevStackError, match="cannot tell the version") as info:
        java_major(java)
    assert str(java) in str(info.value)


def test_java_major_cannot_run(tmp_path: Path) -> None:
    missing = tmp_path / "no-java"
    with pytest.raises(DevStackError, match="cannot run") as info:
        java_major(missing)
    assert str(missing) in str(info.value)


def test_checked_java_accepts_17(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path, 'openjdk version "17.0.15" 2025-04-15')
    assert checked_java(home) == home / "bin" / "java"


def test_checked_java_accepts_21(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path, 'openjdk version "21.0.2" 2024-01-16')
    assert checked_java(home) == home / "bin" / "java"


@pytest.mark.parametrize(
    ("version_line", "major"),
    [('openjdk version "11.0.22" 2024-01-16', 11), ('openjdk version "1.8.0_392"', 8)],
)
def test_checked_java_rejects_old_java(tmp_path: Path, version_line: str, major: int) -> None:
    assert MIN_JAVA == 17
    home = _fake_java_home(tmp_path, version_line)
    with pytest.raises(DevStackError) as info:
        checked_java(home)
    message = str(info.value)
    assert "Java 17" in message
    assert f"Java {major}" in message
    assert str(home / "bin" / "java") in message


def test_find_java_uses_java_home(tmp_path: Path) -> None:
    home = _fake_java_home(tmp_path, 'openjdk version "17"')
    assert find_java(home) == home / "bin" / "java"


def test_find_java_missing_java_home() -> None:
    with pytest.raises(DevStackError) as info:
        find_java(Path("/nonexistent"))
    message = str(info.value)
    assert "JAVA_HOME" in message
    assert "/nonexistent" in message


def test_find_java_java_home_without_java(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(DevStackError, match="JAVA_HOME") as info:
        find_java(tmp_path)
    assert str(tmp_path / "bin" / "java") in str(info.value)


def test_find_java_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _fake_java_home(tmp_path, 'openjdk version "17"')
    monkeypatch.setenv("PATH", str(home / "bin"))
    assert find_java(None) == home / "bin" / "java"


def test_find_java_none_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder
    with pytest.raises(DevStackError, match="no java was found") as info:
        find_java(None)
    assert "JAVA_HOME" in str(info.value)
