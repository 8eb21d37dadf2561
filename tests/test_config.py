"""Settings.from_env: defaults, validation naming the variable, and .env.example coverage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tripchat.config
from tripchat.config import DEFAULT_DB_URL, DEFAULT_MODEL, ConfigError, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
OPENAI_URL = "https://api.openai.com/v1"
LOCAL_URL = "http://127.0.0.1:11434/v1"
# How config.py reads a variable: env.get("NAME", ...) or _bool/_number/_int(env, "NAME", ...).
_READ = re.compile(r"""\benv(?:\.get\(\s*|\s*,\s*)["']([A-Z][A-Z0-9_]*)["']""")


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.model == DEFAULT_MODEL == "gpt-4.1"
    assert settings.db_url == DEFAULT_DB_URL == "sqlite:///tripchat.db"
    assert settings.openai_api_key is None and settings.openai_base_url is None
    assert settings.use_chat_completions is False
    assert settings.model_timeout == 60.0 and settings.model_max_retries == 2
    assert settings.history_items == 40
    assert settings.user_header == "X-User-Id" and settings.default_user == "local"
    assert settings.api_token is None and settings.cors_origins == ()
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.shutdown_grace == 20.0 and settings.db_pool_size == 10


def test_values_are_read_and_trimmed() -> None:
    settings = Settings.from_env(
        {
            "OPENAI_API_KEY": " sk-test ",
            "OPENAI_BASE_URL": LOCAL_URL,
            "CHATKIT_MODEL": "llama3.1",
            "CHATKIT_DB_URL": "postgresql://u:p@db.example:5432/trips",
            "CHATKIT_CHAT_COMPLETIONS": "Yes",
            "CHATKIT_MODEL_TIMEOUT": "2.5",
            "CHATKIT_MODEL_MAX_RETRIES": "0",
            "CHATKIT_HISTORY_ITEMS": "1",
            "CHATKIT_USER_HEADER": "X-Forwarded-User",
            "CHATKIT_DEFAULT_USER": "demo",
            "CHATKIT_API_TOKEN": "secret",
            "CHATKIT_MAX_BODY_BYTES": "1024",
            "CHATKIT_SHUTDOWN_GRACE": "0",
            "CHATKIT_DB_POOL_SIZE": "3",
        }
    )
    assert settings.openai_api_key == "sk-test"
    assert settings.openai_base_url == LOCAL_URL
    assert settings.model == "llama3.1"
    assert settings.db_url == "postgresql://u:p@db.example:5432/trips"
    assert settings.use_chat_completions is True
    assert settings.model_timeout == 2.5 and settings.model_max_retries == 0
    assert settings.history_items == 1
    assert settings.user_header == "X-Forwarded-User" and settings.default_user == "demo"
    assert settings.api_token == "secret"
    assert settings.max_body_bytes == 1024 and settings.shutdown_grace == 0.0
    assert settings.db_pool_size == 3


@pytest.mark.parametrize(
    ("env", "tracing"),
    [
        ({}, False),
        ({"OPENAI_API_KEY": "sk-test"}, True),
        ({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": OPENAI_URL}, True),
        ({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": LOCAL_URL}, False),
        ({"OPENAI_BASE_URL": LOCAL_URL}, False),
        ({"OPENAI_API_KEY": "sk-test", "CHATKIT_TRACING": "off"}, False),
        ({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": LOCAL_URL, "CHATKIT_TRACING": "1"}, True),
    ],
)
def test_tracing_default_follows_the_endpoint(env: dict[str, str], tracing: bool) -> None:
    assert Settings.from_env(env).tracing is tracing


@pytest.mark.parametrize(
    ("env", "needs_key"),
    [
        ({}, True),
        ({"OPENAI_BASE_URL": OPENAI_URL}, True),
        ({"OPENAI_API_KEY": "sk-test"}, False),
        ({"OPENAI_API_KEY": "   "}, True),
        ({"OPENAI_BASE_URL": LOCAL_URL}, False),
        ({"OPENAI_BASE_URL": LOCAL_URL, "OPENAI_API_KEY": "sk-test"}, False),
    ],
)
def test_needs_api_key_only_for_openai_without_one(env: dict[str, str], needs_key: bool) -> None:
    assert Settings.from_env(env).needs_api_key is needs_key


@pytest.mark.parametrize(
    ("raw", "origins"),
    [
        ("", ()),
        ("http://localhost:5173", ("http://localhost:5173",)),
        (" https://a.example , https://b.example,, ", ("https://a.example", "https://b.example")),
    ],
)
def test_cors_origins_are_a_comma_separated_list(raw: str, origins: tuple[str, ...]) -> None:
    assert Settings.from_env({"CHATKIT_CORS_ORIGINS": raw}).cors_origins == origins


@pytest.mark.parametrize(
    "url", ["sqlite:///tmp/trips.db", "sqlite:///:memory:", "postgres://db.example/trips"]
)
def test_supported_db_urls(url: str) -> None:
    assert Settings.from_env({"CHATKIT_DB_URL": url}).db_url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATKIT_MODEL_TIMEOUT", "abc"),
        ("CHATKIT_MODEL_TIMEOUT", "0"),
        ("CHATKIT_MODEL_TIMEOUT", "nan"),
        ("CHATKIT_MODEL_MAX_RETRIES", "-1"),
        ("CHATKIT_MODEL_MAX_RETRIES", "1.5"),
        ("CHATKIT_CHAT_COMPLETIONS", "maybe"),
        ("CHATKIT_TRACING", "2"),
        ("OPENAI_BASE_URL", "ftp://x"),
        ("OPENAI_BASE_URL", "http://"),
        ("OPENAI_BASE_URL", "127.0.0.1:8080/v1"),
        ("OPENAI_BASE_URL", "http://[::1/v1"),
        ("CHATKIT_DB_URL", "mysql://x"),
        ("CHATKIT_DB_URL", "sqlite://relative.db"),
        ("CHATKIT_DB_URL", "sqlite:///"),
        ("CHATKIT_DB_URL", "postgresql:///trips"),
        ("CHATKIT_DB_URL", "postgresql://[x/trips"),
        ("CHATKIT_DB_URL", "postgresql://u@db:abc/trips"),
        ("CHATKIT_DB_URL", "postgresql://u@db:99999/trips"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1"),
        ("CHATKIT_MAX_BODY_BYTES", "-1"),
        ("CHATKIT_MAX_BODY_BYTES", "100"),
        ("CHATKIT_MAX_BODY_BYTES", "inf"),
        ("CHATKIT_HISTORY_ITEMS", "0"),
        ("CHATKIT_HISTORY_ITEMS", "nan"),
        ("CHATKIT_SHUTDOWN_GRACE", "-1"),
        ("CHATKIT_SHUTDOWN_GRACE", "inf"),
        ("CHATKIT_DB_POOL_SIZE", "0"),
        ("CHATKIT_MAX_STREAMS_PER_USER", "0"),
        ("CHATKIT_LEASE_SECONDS", "0.5"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "two"),
        ("CHATKIT_USER_HEADER", "X User"),
        ("CHATKIT_SECRET_KEY", "too-short"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_bad_database_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHATKIT_DB_URL": "mysql://root:hunter2@db/trips"})
    assert "hunter2" not in str(caught.value)
    assert "mysql://root:***@db/trips" in str(caught.value)


def _variables_read_by_config() -> set[str]:
    source = Path(tripchat.config.__file__).read_text(encoding="utf-8")
    return set(_READ.findall(source))


def test_env_example_documents_every_variable() -> None:
    read = _variables_read_by_config()
    # Guards the regex itself: it must keep finding what from_env reads.
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATKIT_DB_URL", "CHATKIT_TRACING"} <= read
    assert len(read) >= 15
    example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert sorted(read - documented) == []
