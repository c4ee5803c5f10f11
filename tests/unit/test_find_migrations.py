"""Unit tests for distcount_store.find_migrations on temporary folders, the repository's one and
the one shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from distcount_config import load
from distcount_store import MigrationError, _migrate, find_migrations, shipped_migrations

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_ordered_by_version(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        {
            "0010_tenth.sql": "SELECT 10;",
            "0002_second.sql": "SELECT 2;",
            "0001_first.sql": "SELECT 1;",
        },
    )
    migrations = find_migrations(folder)
    assert [m.version for m in migrations] == ["0001", "0002", "0010"]
    assert [m.name for m in migrations] == ["first", "second", "tenth"]
    assert [m.sql for m in migrations] == ["SELECT 1;", "SELECT 2;", "SELECT 10;"]


def test_checksum_follows_content(tmp_path: Path) -> None:
    a = find_migrations(_write(tmp_path / "a", {"0001_x.sql": "SELECT 1;"}))[0]
    b = find_migrations(_write(tmp_path / "b", {"0001_x.sql": "SELECT 2;"}))[0]
    c = find_migrations(_write(tmp_path / "c", {"0001_x.sql": "SELECT 1;"}))[0]
    assert a.checksum != b.checksum
    assert a.checksum == c.checksum
    assert len(a.checksum) == 64


def test_non_sql_files_are_ignored(tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        {
            "0001_first.sql": "SELECT 1;",
            "README.md": "notes",
            "0002_draft.sql.bak": "SELECT 2;",
            "0003_notes.txt": "x",
        },
    )
    (folder / "subdir").mkdir()
    migrations = find_migrations(folder)
    assert [(m.version, m.name) for m in migrations] == [("0001", "first")]


@pytest.mark.parametrize(
    "bad_name",
    [
        "1_short.sql",
        "00001_five_digits.sql",
        "0002_Upper.sql",
        "0002-dash.sql",
        "0002_with-dash.sql",
        "0002_.sql",
        "abcd_letters.sql",
        "initial.sql",
    ],
)
def test_badly_named_sql_raises(tmp_path: Path, bad_name: str) -> None:
    folder = _write(tmp_path, {"0001_first.sql": "SELECT 1;", bad_name: "SELECT 2;"})
    with pytest.raises(MigrationError) as info:
        find_migrations(folder)
    message = str(info.value)
    assert bad_name in message
    assert "NNNN_lowercase_name.sql" in message


def test_duplicate_version_raises(tmp_path: Path) -> None:
    folder = _write(tmp_path, {"0001_first.sql": "SELECT 1;", "0001_again.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match="version 0001 is used twice") as info:
        find_migrations(folder)
    # sorted by name, 0001_again.sql comes first, so 0001_first.sql is the duplicate
    assert "0001_first.sql" in str(info.value)


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no migration files") as info:
        find_migrations(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_without_sql_files_raises(tmp_path: Path) -> None:
    folder = _write(tmp_path, {"README.md": "nothing here"})
    with pytest.raises(MigrationError, match="no migration files"):
        find_migrations(folder)


def test_missing_folder_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(MigrationError, match="does not exist") as info:
        find_migrations(missing)
    assert str(missing) in str(info.value)


def test_file_instead_of_folder_raises(tmp_path: Path) -> None:
    file = tmp_path / "0001_first.sql"
    file.write_text("SELECT 1;", encoding="utf-8")
    with pytest.raises(MigrationError, match="does not exist"):
        find_migrations(file)


def test_real_migrations_folder_parses() -> None:
    migrations = find_migrations(REPO_MIGRATIONS)
    assert migrations
    assert migrations[0].version == "0001"
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert all(m.sql.strip() for m in migrations)


# --- the migrations shipped inside distcount-store --------------------------------------------


def test_the_shipped_migrations_are_the_repository_folder() -> None:
    shipped = find_migrations()  # no folder: those installed with the package
    assert shipped == find_migrations(REPO_MIGRATIONS)
    assert [m.version for m in shipped][:3] == ["0001", "0002", "0003"]


def test_the_shipped_migrations_are_package_data() -> None:
    folder = shipped_migrations()
    # found through the package, wherever it is installed, not by walking up from a file
    assert folder == resources.files("distcount_store") / "migrations"
    assert sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql")) == (
        sorted(path.name for path in REPO_MIGRATIONS.glob("*.sql"))
    )


def test_the_services_default_to_the_shipped_migrations() -> None:
    assert load({}).migrations_dir is None
    folder = load({"DISTCOUNT_MIGRATIONS_DIR": str(REPO_MIGRATIONS)}).migrations_dir
    assert folder == REPO_MIGRATIONS


def test_missing_shipped_migrations_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Path("/nonexistent/distcount_store/migrations")
    monkeypatch.setattr(_migrate, "shipped_migrations", lambda: gone)
    with pytest.raises(MigrationError, match="reinstall distcount-store") as info:
        find_migrations()
    assert "DISTCOUNT_MIGRATIONS_DIR" in str(info.value)
