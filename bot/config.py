"""Settings, read once per process from the environment (and a `.env` file) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "ollama/llama3.2"
OLLAMA_DEFAULT_BASE = "http://localhost:11434"


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("switchboard"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default_factory=_default_home)
    config_dir: Path | None = None
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SWITCHBOARD_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SWITCHBOARD_REDIS_URL")
    )

    model: str = DEFAULT_MODEL
    llm_api_base: str | None = None
    llm_timeout: float = 60.0
    # Extra prices for models litellm does not know: {"model": {"input": $/Mtok, "output": $/Mtok}}.
    model_prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Show replies on the terminal and web chat while the model writes them.
    stream_replies: bool = True
    history_token_budget: int = 3000
    # Tokens of the text files sent with one message that reach the persona (the rest is cut,
    # and the reply says so).
    file_token_budget: int = 12_000
    default_persona: str = "assistant"

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8765, ge=1, le=65535)

    db_pool_size: int = 20
    queue_name: str = "switchboard:queue"
    poll_delay: float = 0.02
    job_timeout: float = 300.0
    # One turn (a command or a persona's answer) is stopped after this; keep it below
    # job_timeout so the person hears why.
    turn_timeout: float = 240.0
    # Tries to answer one message (a failure, a time-out, a crashed worker each count)
    # before it is set aside as failed.
    max_message_attempts: int = Field(default=3, ge=1)
    max_jobs: int = 20
    max_delivery_attempts: int = 8
    max_input_chars: int = 32_000
    reply_timeout: float = 120.0

    # Scheduled runs: how late a missed time may still run, and a random delay to spread them.
    schedule_misfire_grace: float = 3600.0
    schedule_jitter: float = 5.0
    # Addresses (CIDR) workflow http nodes may call although they are internal.
    workflow_http_allow: list[str] = Field(default_factory=list)

    # The key that encrypts stored secrets; default: `secret.key` in the home, made on first use.
    secret_key: SecretStr | None = None

    log_level: str = "INFO"

    @property
    def resolved_config_dir(self) -> Path:
        return self.config_dir or self.home / "config"

    def effective_api_base(self, model: str) -> str | None:
        """The address a model is reached at, as shown to people when it cannot be reached."""
        if self.llm_api_base:
            return self.llm_api_base
        if model.startswith("ollama"):
            return OLLAMA_DEFAULT_BASE
        return None

    def safe_dump(self) -> dict[str, Any]:
        """Settings for display: credentials inside URLs are masked."""
        data = self.model_dump(mode="json")
        for key in ("database_url", "redis_url"):
            data[key] = mask_url(data[key])
        return data


def mask_url(url: str | None) -> str | None:
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
