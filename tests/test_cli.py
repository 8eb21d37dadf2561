"""`tripchat plan` as a user runs it: a subprocess with a minimal environment, against the mock."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from agents import SQLiteSession
from openai_mock import OpenAIMock

CLI_TIMEOUT = 60.0
"""Generous for a loaded machine; a run normally takes one to four seconds."""


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """What any shell has, and nothing of the developer's own configuration."""
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path)}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def mock_env(openai_mock: OpenAIMock, base_env: dict[str, str], db_path: Path) -> dict[str, str]:
    """The environment for a CLI talking to the mock, with its memory in a temporary file."""
    return {
        **base_env,
        "OPENAI_BASE_URL": openai_mock.base_url,
        "OPENAI_API_KEY": "test",
        "CHATKIT_DB_URL": f"sqlite:///{db_path}",
    }


def tripchat(
    env: dict[str, str], *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `tripchat ARGS...` to completion; stdin is closed after `stdin`."""
    return subprocess.run(
        [sys.executable, "-m", "tripchat.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Failed with a single, traceback-free line on stderr mentioning every needle."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_single_turn_streams_the_reply(mock_env: dict[str, str]) -> None:
    result = tripchat(
        mock_env, "plan", "4 days in Lisbon from London in late April [tokens 5]", "--single-turn"
    )
    assert result.returncode == 0, result.stderr
    assert "w0 w1 w2 w3 w4" in result.stdout
    assert result.stderr == ""  # no request log in the conversation's terminal


def test_tool_steps_are_labelled_on_stderr(
    mock_env: dict[str, str], openai_mock: OpenAIMock
) -> None:
    result = tripchat(
        mock_env,
        "plan",
        'Where is it? [call find_destination {"name": "Lisbon"}] [tokens 1]',
        "--single-turn",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[Finding Lisbon]"
    assert result.stdout.startswith("Tool results:")
    assert "Portugal" in result.stdout
    assert len(openai_mock.requests) == 2


def test_a_conversation_resumes_from_its_session_id(
    mock_env: dict[str, str], openai_mock: OpenAIMock, db_path: Path
) -> None:
    first = tripchat(mock_env, "plan", stdin="hello [tokens 2]\n\n")
    assert first.returncode == 0, first.stderr
    assert "w0 w1" in first.stdout
    announced = re.search(r"session (\S+) \(new; resume with --session \1\)", first.stderr)
    assert announced is not None, first.stderr
    session_id = announced.group(1)

    second = tripchat(mock_env, "plan", "--session", session_id, "--single-turn", "again")
    assert second.returncode == 0, second.stderr
    assert "session" not in second.stderr  # a single turn announces nothing
    resumed = json.dumps(openai_mock.requests[-1].body)
    assert "hello [tokens 2]" in resumed and "again" in resumed

    with sqlite3.connect(db_path) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM agent_messages WHERE session_id = ?", (session_id,)
        ).fetchone()
    assert count == 4  # two user messages and two replies

    third = tripchat(mock_env, "plan", "--session", session_id, stdin="\n")
    assert f"session {session_id} (resumed: 4 earlier items)" in third.stderr
    typo = tripchat(mock_env, "plan", "--session", session_id + "x", stdin="\n")
    assert f"session {session_id}x (new;" in typo.stderr

    # The rows are the Agents SDK's own: its SQLiteSession reads the same conversation.
    sdk_items = asyncio.run(SQLiteSession(session_id, db_path).get_items())
    assert [item.get("role") for item in sdk_items] == ["user", "assistant", "user", "assistant"]
    assert "hello [tokens 2]" in json.dumps(sdk_items[0])


def test_missing_api_key_is_one_line(base_env: dict[str, str], tmp_path: Path) -> None:
    result = tripchat(base_env, "plan", "hello", "--single-turn", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "OPENAI_API_KEY")
    assert not (tmp_path / "tripchat.db").exists()  # failed before touching the default DB


def test_single_turn_needs_a_prompt(mock_env: dict[str, str]) -> None:
    result = tripchat(mock_env, "plan", "--single-turn")
    assert result.returncode == 2
    assert "needs a prompt" in result.stderr and "Traceback" not in result.stderr
    assert "you>" not in result.stdout


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--from", "sqlite:////nonexistent/dir/x.db", "--to", "sqlite:///{tmp}/y.db"], "--from"),
        (["--from", "sqlite:///{tmp}/x.db", "--to", "mysql://db/x"], "--to"),
    ],
)
def test_migrate_errors_name_the_flag(
    base_env: dict[str, str], tmp_path: Path, flags: list[str], needle: str
) -> None:
    args = [flag.format(tmp=tmp_path) for flag in flags]
    result = tripchat(base_env, "migrate", *args)
    assert result.returncode == 2
    assert_one_line_error(result, f"tripchat: {needle}")


def test_own_endpoint_needs_no_api_key(mock_env: dict[str, str]) -> None:
    env = {k: v for k, v in mock_env.items() if k != "OPENAI_API_KEY"}
    result = tripchat(env, "plan", "hello [tokens 3]", "--single-turn")
    assert result.returncode == 0, result.stderr
    assert "w0 w1 w2" in result.stdout


def test_invalid_config_is_one_line(mock_env: dict[str, str]) -> None:
    result = tripchat({**mock_env, "CHATKIT_MODEL_TIMEOUT": "abc"}, "plan", "x", "--single-turn")
    assert result.returncode == 2
    assert_one_line_error(result, "CHATKIT_MODEL_TIMEOUT")


def test_upstream_failure_is_one_line(mock_env: dict[str, str], openai_mock: OpenAIMock) -> None:
    env = {**mock_env, "CHATKIT_MODEL_MAX_RETRIES": "0"}
    result = tripchat(env, "plan", "hello [error 500]", "--single-turn")
    assert_one_line_error(result, "500")
    assert len(openai_mock.requests) == 1  # no retries were asked for


def test_serve_workers_refuse_an_in_memory_database_in_one_line(
    base_env: dict[str, str],
) -> None:
    # Each worker would get a database of its own: refused before anything is bound.
    env = {**base_env, "OPENAI_API_KEY": "test", "CHATKIT_DB_URL": "sqlite:///:memory:"}
    result = tripchat({**env, "WEB_CONCURRENCY": "2"}, "serve", "--port", "0")
    assert result.returncode == 2
    assert_one_line_error(result, "WEB_CONCURRENCY", "PostgreSQL")
    bad = tripchat(env, "serve", "--workers", "0")
    assert bad.returncode == 2 and "--workers" in bad.stderr, bad.stderr
