"""`tripchat smoke` against a real server: healthy with a working model, unhealthy without."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openai_mock import OpenAIMock
from servers import ServerProcess, app_env, free_port, minimal_env


def smoke(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tripchat.cli", "smoke", "--url", url],
        env=minimal_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_passes_against_a_working_server(openai_mock: OpenAIMock, tmp_path: Path) -> None:
    with ServerProcess(app_env(openai_mock.base_url, tmp_path / "t.db")) as server:
        done = smoke(server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("healthy")
    assert "FAIL" not in done.stdout
    assert done.stdout.count("w0 w1 w2") == 2  # both replies were printed
    assert len(openai_mock.requests) == 2  # one model call per turn


def test_smoke_reports_a_broken_model(tmp_path: Path) -> None:
    dead_model = f"http://127.0.0.1:{free_port()}/v1"
    env = app_env(dead_model, tmp_path / "t.db", CHATKIT_MODEL_MAX_RETRIES="0")
    with ServerProcess(env) as server:
        done = smoke(server.url)
    assert done.returncode == 1
    assert "FAIL turn 1: streamed a reply" in done.stdout
    assert done.stdout.rstrip().endswith("UNHEALTHY")


def test_smoke_reports_an_unreachable_server() -> None:
    done = smoke(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "FAIL the server answered" in done.stdout
    assert "Traceback" not in done.stderr
