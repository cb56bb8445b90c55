"""backlash.toml: one validated settings object, secrets only by reference.

The file names environment variables (``token_env``, ``password_env``), never
secret values, so a config can be committed and shared. Relative paths resolve
against the folder of the config file, so ``backlash --config demo/backlash.toml``
works from any directory. Environment variables ``BACKLASH_<SECTION>__<KEY>``
override the file (for containers and CI).
"""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SOURCE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


class ConfigError(ValueError):
    """The config cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseConfig(_Section):
    path: Path = Path("warehouse.duckdb")
    # Readers (backlash sql, BI tools) open this copy, published atomically
    # after every load, so an analyst never blocks the loader (PITFALLS.md).
    snapshot_path: Path | None = None

    @property
    def read_path(self) -> Path:
        return self.snapshot_path or self.path.with_name(self.path.stem + ".read.duckdb")


class _SourceBase(_Section):
    name: Annotated[str, Field(pattern=SOURCE_NAME_PATTERN)]
    enabled: bool = True


class FileSourceConfig(_SourceBase):
    kind: Literal["file"]
    path: Path
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    batch_size: Annotated[int, Field(gt=0)] = 50_000


class ZendeskSourceConfig(_SourceBase):
    kind: Literal["zendesk"]
    subdomain: str | None = None
    base_url: str | None = None
    email: str | None = None
    token_env: str | None = None
    oauth_token_env: str | None = None
    start_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    comments: bool = True
    # Zendesk allows 10 incremental-export requests a minute, and a plan-wide
    # API rate for the rest (comments): the client stays under both.
    rate_per_minute: Annotated[int, Field(gt=0)] = 10
    api_rate_per_minute: Annotated[int, Field(gt=0)] = 200

    @property
    def url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.subdomain:
            return f"https://{self.subdomain}.zendesk.com"
        raise ConfigError(f"source {self.name!r}: set subdomain or base_url")


class FreshdeskSourceConfig(_SourceBase):
    kind: Literal["freshdesk"]
    domain: str | None = None
    base_url: str | None = None
    api_key_env: str
    start_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    conversations: bool = True
    rate_per_minute: Annotated[int, Field(gt=0)] = 100

    @property
    def url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.domain:
            return f"https://{self.domain}.freshdesk.com"
        raise ConfigError(f"source {self.name!r}: set domain or base_url")


class ImapSourceConfig(_SourceBase):
    kind: Literal["imap"]
    host: str
    port: int = 993
    security: Literal["ssl", "starttls", "none"] = "ssl"
    user: str
    password_env: str
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    batch_size: Annotated[int, Field(gt=0)] = 200
    max_message_bytes: Annotated[int, Field(gt=0)] = 5_000_000
    timeout: Annotated[float, Field(gt=0)] = 30.0
    # A private CA (self-signed server): its PEM file, instead of the system store.
    ca_file: Path | None = None
    # The team's own addresses (or "@domain"): their replies are never the customer.
    support_addresses: list[str] = Field(default_factory=list)


class MboxSourceConfig(_SourceBase):
    kind: Literal["mbox"]
    path: Path
    batch_size: Annotated[int, Field(gt=0)] = 200
    max_message_bytes: Annotated[int, Field(gt=0)] = 5_000_000
    support_addresses: list[str] = Field(default_factory=list)


SourceConfig = Annotated[
    FileSourceConfig
    | ZendeskSourceConfig
    | FreshdeskSourceConfig
    | ImapSourceConfig
    | MboxSourceConfig,
    Field(discriminator="kind"),
]


class ChangesConfig(_Section):
    path: Path


class TopicConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    description: str = ""
    phrases: list[str] = Field(default_factory=list)


class LabelsConfig(_Section):
    # Empty means the built-in taxonomy (transforms.taxonomy.DEFAULT_TOPICS).
    topics: list[TopicConfig] = Field(default_factory=list)


class DetectionConfig(_Section):
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    min_excess: Annotated[float, Field(ge=0)] = 8.0
    min_ratio: Annotated[float, Field(ge=1.0)] = 1.5
    window_days: Annotated[int, Field(gt=0)] = 14
    # Severity 1 goes to the digest only; alerts are emailed from this step up.
    alert_min_severity: Annotated[int, Field(ge=1, le=4)] = 2
    per_channel: bool = False
    # Evidence (nats) a run of moderately high days must add up to (a CUSUM);
    # None: derived from alpha, the same false-alarm budget; 0 turns it off.
    cusum_h: Annotated[float, Field(ge=0)] | None = None


class AlertsConfig(_Section):
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    sender: str = Field("backlash@localhost", alias="from")
    smtp_host: str | None = None
    smtp_port: int = 587
    security: Literal["ssl", "starttls", "none"] = "starttls"
    user: str | None = None
    password_env: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    outbox: Path = Path("outbox")
    digest_to: list[str] = Field(default_factory=list)
    # Who hears about failed flow runs: the people who run backlash, not leadership.
    operators: list[str] = Field(default_factory=list)
    webhook_url_env: str | None = None
    # Anomalies that ended longer ago than this when first seen (a first run
    # over years of history) are stored but not emailed; 0 = email them all.
    max_age_days: Annotated[int, Field(ge=0)] = 7
    # Follow-ups for an ongoing spike: only when it escalates (default), or
    # also a reminder every reminder_hours while it lasts.
    escalation_only: bool = True
    reminder_hours: Annotated[float, Field(gt=0)] = 24.0
    # One short "back to normal" note when a spike ends (with the recovery time).
    resolved_note: bool = True
    # Temporary failures (SMTP 4xx, refused connections, HTTP 429/5xx) are
    # retried this many times within a run, backing off from this many seconds.
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 1.0
    # A run that crashed while a send was in flight cannot know whether the
    # server took it: false = record it "unconfirmed" and never send it again
    # (no duplicates; the .eml stays in the outbox); true = send it again with
    # the same Message-ID (no loss; clients that de-duplicate show it once).
    resend_unconfirmed: bool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ScheduleConfig(_Section):
    timezone: str = "UTC"
    ingest_every_minutes: Annotated[int, Field(gt=0)] = 15
    monitor_cron: str = "5 * * * *"
    digest_cron: str = "0 8 * * *"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("monitor_cron", "digest_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value


class Settings(BaseSettings):
    """The whole config; see backlash.toml for a commented example."""

    model_config = SettingsConfigDict(
        env_prefix="BACKLASH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    warehouse: WarehouseConfig
    sources: list[SourceConfig] = Field(default_factory=list)
    changes: ChangesConfig | None = None
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    config_path: Path = Path("backlash.toml")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; no .env files, no secret dirs.
        return env_settings, init_settings

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"two sources are named {source.name!r}; names must be unique")
            seen.add(source.name)
        return sources

    def source(self, name: str) -> Any:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"{self.config_path}: no source named {name!r} (known: {known})")


def secret(env_name: str | None, *, what: str) -> str | None:
    """Read a secret from the environment by the name the config gives.

    The value is never logged or echoed; only the variable's name appears in
    errors, which is what an operator needs to fix it.
    """
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"{what}: environment variable {env_name} is not set")
    return value


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    warehouse = settings.warehouse.model_copy(
        update={
            "path": fix(settings.warehouse.path),
            "snapshot_path": fix(settings.warehouse.snapshot_path)
            if settings.warehouse.snapshot_path
            else None,
        }
    )
    sources = [
        s.model_copy(update={"path": fix(s.path)}) if hasattr(s, "path") else s
        for s in settings.sources
    ]
    changes = (
        settings.changes.model_copy(update={"path": fix(settings.changes.path)})
        if settings.changes
        else None
    )
    alerts = settings.alerts.model_copy(update={"outbox": fix(settings.alerts.outbox)})
    return settings.model_copy(
        update={"warehouse": warehouse, "sources": sources, "changes": changes, "alerts": alerts}
    )


def _format_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        # Nested discriminated unions repeat the tag in the location; keep it,
        # it tells which kind of source the key belongs to.
        lines.append(f"  {loc}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: Path | str) -> Settings:
    """Read and validate ``path``; raise ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (pass --config FILE)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "warehouse" not in data:
        raise ConfigError(f"{path}: missing [warehouse] section (with path = ...)")
    try:
        settings = Settings(**data, config_path=path.resolve())
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
    return _resolve_paths(settings, path.resolve().parent)
