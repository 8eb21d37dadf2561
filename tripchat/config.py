"""Configuration read from the environment, shared by the server and the CLI.

Every value is validated once at start-up, so a typo fails fast with the name of
the variable instead of surfacing as an odd error mid-conversation.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

DEFAULT_MODEL = "gpt-4.1"
DEFAULT_DB_URL = "sqlite:///tripchat.db"
OPENAI_HOSTS = ("api.openai.com",)
_PASSWORD = re.compile(r"(//[^:/@]*:)[^@/]*@")
MIN_SECRET_CHARS = 32
EXIT_USAGE = 2
"""The exit status for bad configuration, as for a command-line usage error."""


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"; neither is a setting
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _number(env, name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {env[name]!r}")
    return int(value)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if raw and len(raw) < MIN_SECRET_CHARS:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_CHARS} characters")
    return raw or None


def _has_host(url: str) -> bool:
    """Whether the URL names a host, and a valid port if any (not `:abc`, `:99999`, `[::1`)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return False
    return bool(parts.hostname)


def _without_password(url: str) -> str:
    """The URL fit for a log line: a password in it becomes `***`."""
    return _PASSWORD.sub(r"\1***@", url)


def check_db_url(url: str) -> str:
    """Accept the URL schemes a store exists for; anything else names CHATKIT_DB_URL."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return url
    if scheme in ("postgresql", "postgres") and _has_host(url):
        return url
    raise ConfigError(
        "CHATKIT_DB_URL must be sqlite:///path/to/file.db, sqlite:///:memory: or "
        f"postgresql://user:password@host:port/database, got {_without_password(url)!r}"
    )


@dataclass(frozen=True)
class Settings:
    """Everything tripchat reads from the environment, already validated."""

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    model: str = DEFAULT_MODEL
    db_url: str = DEFAULT_DB_URL
    use_chat_completions: bool = False
    tracing: bool = True
    model_timeout: float = 60.0
    model_max_retries: int = 2
    history_items: int = 40
    user_header: str = "X-User-Id"
    default_user: str = "local"
    api_token: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    max_body_bytes: int = 1024 * 1024
    shutdown_grace: float = 20.0
    db_pool_size: int = 10
    max_streams_per_user: int = 10
    lease_seconds: float = 15.0
    workers: int = 1
    secret_key: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    attachment_retention_hours: float = 24.0
    transcribe_model: str = "gpt-4o-mini-transcribe"

    @property
    def uses_openai_platform(self) -> bool:
        """True when requests go to OpenAI itself rather than a compatible endpoint."""
        if not self.openai_base_url:
            return True
        return urlsplit(self.openai_base_url).hostname in OPENAI_HOSTS

    @property
    def needs_api_key(self) -> bool:
        """OpenAI's platform needs a key; a self-hosted endpoint may not."""
        return self.uses_openai_platform and not self.openai_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings; raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        base_url = env.get("OPENAI_BASE_URL", "").strip() or None
        if base_url is not None:
            scheme = base_url.split(":", 1)[0].lower()
            if scheme not in ("http", "https") or not _has_host(base_url):
                raise ConfigError(
                    f"OPENAI_BASE_URL must be an http(s) URL such as "
                    f"http://127.0.0.1:8080/v1, got {base_url!r}"
                )
        model = env.get("CHATKIT_MODEL", "").strip() or DEFAULT_MODEL
        db_url = check_db_url(env.get("CHATKIT_DB_URL", "").strip() or DEFAULT_DB_URL)
        user_header = env.get("CHATKIT_USER_HEADER", "").strip() or "X-User-Id"
        if not user_header.replace("-", "").isalnum():
            raise ConfigError(f"CHATKIT_USER_HEADER must be a header name, got {user_header!r}")
        origins = tuple(
            o.strip() for o in env.get("CHATKIT_CORS_ORIGINS", "").split(",") if o.strip()
        )
        settings = cls(
            openai_api_key=env.get("OPENAI_API_KEY", "").strip() or None,
            openai_base_url=base_url,
            model=model,
            db_url=db_url,
            use_chat_completions=_bool(env, "CHATKIT_CHAT_COMPLETIONS", False),
            model_timeout=_number(env, "CHATKIT_MODEL_TIMEOUT", 60.0, 0.1),
            model_max_retries=_int(env, "CHATKIT_MODEL_MAX_RETRIES", 2, 0),
            history_items=_int(env, "CHATKIT_HISTORY_ITEMS", 40, 1),
            user_header=user_header,
            default_user=env.get("CHATKIT_DEFAULT_USER", "").strip() or "local",
            api_token=env.get("CHATKIT_API_TOKEN", "").strip() or None,
            cors_origins=origins,
            max_body_bytes=_int(env, "CHATKIT_MAX_BODY_BYTES", 1024 * 1024, 1024),
            shutdown_grace=_number(env, "CHATKIT_SHUTDOWN_GRACE", 20.0, 0.0),
            db_pool_size=_int(env, "CHATKIT_DB_POOL_SIZE", 10, 1),
            max_streams_per_user=_int(env, "CHATKIT_MAX_STREAMS_PER_USER", 10, 1),
            lease_seconds=_number(env, "CHATKIT_LEASE_SECONDS", 15.0, 1.0),
            workers=_int(env, "WEB_CONCURRENCY", 1, 1),
            secret_key=_secret(env, "CHATKIT_SECRET_KEY"),
            max_upload_bytes=_int(env, "CHATKIT_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, 1024),
            attachment_retention_hours=_number(
                env, "CHATKIT_ATTACHMENT_RETENTION_HOURS", 24.0, 0.01
            ),
            transcribe_model=env.get("CHATKIT_TRANSCRIBE_MODEL", "").strip()
            or "gpt-4o-mini-transcribe",
        )
        tracing_default = settings.uses_openai_platform and settings.openai_api_key is not None
        return replace(settings, tracing=_bool(env, "CHATKIT_TRACING", tracing_default))
