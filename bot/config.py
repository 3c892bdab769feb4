"""Settings, read once per process from the environment (and a `.env` file) and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "ollama/llama3.2"
OLLAMA_DEFAULT_BASE = "http://localhost:11434"

# Who may talk on a channel: everyone, the members of the installed workspace (others pair),
# the listed accounts, or whoever the owner approved.
Access = Literal["open", "workspace", "allowlist", "pairing"]
# Allow lists (platform user ids; for email, addresses and domains) and host names are
# written in the environment as comma-separated text (a,b,c), not JSON.
CommaList = Annotated[list[str], NoDecode]
CHANNELS = ("web", "terminal", "slack", "telegram", "discord", "email")


@dataclass(frozen=True)
class TemplateBounds:
    """What a template a person or a workflow supplies may use (see bot/sandbox.py)."""

    timeout: float = 2.0  # seconds of wall-clock time
    memory_mb: int = 256  # the address space of the process that renders it
    max_output: int = 1_000_000  # characters


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
    web_port: int = Field(default=8765, ge=0, le=65535)  # 0: any free port
    # Host names the web chat answers to besides loopback (a reverse proxy's public name):
    # comma-separated in the environment.
    web_hosts: CommaList = Field(default_factory=list)

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

    # Who may talk, per channel (bot/access.py). Channels strangers can reach pair by default.
    web_access: Access = "open"
    web_allow: CommaList = Field(default_factory=list)
    terminal_access: Access = "open"
    terminal_allow: CommaList = Field(default_factory=list)
    slack_access: Access = "workspace"
    slack_allow: CommaList = Field(default_factory=list)
    telegram_access: Access = "pairing"
    telegram_allow: CommaList = Field(default_factory=list)
    discord_access: Access = "pairing"
    discord_allow: CommaList = Field(default_factory=list)
    email_access: Access = "pairing"
    email_allow: CommaList = Field(default_factory=list)
    # Slack (README, "Slack"): the bot token turns the channel on; the app-level token
    # (xapp-...) connects by Socket Mode, the signing secret takes events at /slack/events.
    slack_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_BOT_TOKEN", "SWITCHBOARD_SLACK_BOT_TOKEN"),
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_APP_TOKEN", "SWITCHBOARD_SLACK_APP_TOKEN"),
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "SWITCHBOARD_SLACK_SIGNING_SECRET"),
    )
    slack_api_url: str = "https://slack.com/api/"
    # Answer other bots' messages too (never its own).
    slack_allow_bots: bool = False
    # A reply that could not be delivered for this long is not sent out of context later.
    reply_expiry: float = Field(default=3600.0, gt=0)
    # Pairing replies to unknown senders per minute, all channels together: a flood costs
    # stored rows, never a stream of replies.
    pairing_replies_per_minute: int = Field(default=20, ge=0)
    # Bounds on every template and expression a person or a workflow supplies.
    template_timeout: float = Field(default=TemplateBounds.timeout, gt=0)
    template_memory_mb: int = Field(default=TemplateBounds.memory_mb, ge=64)
    template_max_output: int = Field(default=TemplateBounds.max_output, gt=0)

    # The key that encrypts stored secrets; default: `secret.key` in the home, made on first use.
    secret_key: SecretStr | None = None

    log_level: str = "INFO"

    @field_validator("web_hosts", *(f"{channel}_allow" for channel in CHANNELS), mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def access(self, channel: str) -> tuple[Access, list[str]]:
        """A channel's policy and allow list; a channel not named here pairs, the safe way."""
        if channel not in CHANNELS:
            return "pairing", []
        return getattr(self, f"{channel}_access"), getattr(self, f"{channel}_allow")

    @property
    def template_bounds(self) -> TemplateBounds:
        return TemplateBounds(
            self.template_timeout, self.template_memory_mb, self.template_max_output
        )

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
