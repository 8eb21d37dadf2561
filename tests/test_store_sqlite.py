"""The SQLite driver's own: the schema it applies, its versioning, and the package data.

The contract itself runs on every backend in `test_store.py`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_store import TABLES, add_messages, all_items, new_thread

from tripchat.config import ConfigError
from tripchat.store import open_store

pytestmark = pytest.mark.anyio

REPO = Path(__file__).parents[1]

# -- the SQLite schema -----------------------------------------------------------------------


def sqlite_query(path: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute(sql)]


async def test_new_file_gets_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with await open_store(f"sqlite:///{path}") as store:
        await store.ping()
        thread = await new_thread(store)
        items = await add_messages(store, thread.id, 2)

    schema = sqlite_query(path, "SELECT sql FROM sqlite_master ORDER BY name")
    assert set(sqlite_query(path, "SELECT name FROM sqlite_master WHERE type='table'")) >= TABLES
    assert sqlite_query(path, "PRAGMA user_version") == [1]
    assert sqlite_query(path, "PRAGMA journal_mode") == ["wal"]

    for _ in range(2):  # reopening applies the schema again, harmlessly
        async with await open_store(f"sqlite:///{path}") as store:
            assert await all_items(store, thread.id) == items
    assert sqlite_query(path, "SELECT sql FROM sqlite_master ORDER BY name") == schema
    assert sqlite_query(path, "PRAGMA user_version") == [1]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    sqlite_query(path, "PRAGMA user_version = 2")
    with pytest.raises(ConfigError, match="CHATKIT_DB_URL"):
        await open_store(f"sqlite:///{path}")


@pytest.mark.parametrize(
    "url", ["mysql://x", "sqlite://relative.db", "sqlite:///", "", "postgresql:///no-host"]
)
async def test_unsupported_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="CHATKIT_DB_URL"):
        await open_store(url)


async def test_in_memory_database_works() -> None:
    async with await open_store("sqlite:///:memory:") as store:
        thread = await new_thread(store)
        items = await add_messages(store, thread.id, 3)
        assert await all_items(store, thread.id, "desc") == items[::-1]


# -- the schema ships inside the package ------------------------------------------------------


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of the repository, built (as pip does) from a clean copy of it.

    A copy, because setuptools builds in place and would leave build/ and
    *.egg-info in the work tree, where stale files could leak into later wheels.
    """
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "*venv", "__pycache__", ".*_cache", "*.db*"
        ),
    )
    out = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = out.glob("tripchat-*.whl")
    return wheel


@pytest.mark.slow
def test_installed_package_finds_its_schema(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("tripchat/schema.sql").decode()
    assert shipped == (REPO / "schema.sql").read_text(encoding="utf-8")

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        f"""
        import asyncio, json, sqlite3, sys
        sys.path.insert(0, {str(site)!r})
        import tripchat, tripchat.store

        async def main():
            store = await tripchat.store.open_store("sqlite:///fresh.db")
            await store.close()

        asyncio.run(main())
        names = [r[0] for r in sqlite3.connect("fresh.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        print(json.dumps({{"file": tripchat.__file__, "tables": names}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert Path(result["file"]).is_relative_to(site)
    assert set(result["tables"]) >= TABLES
