"""``global.check.holds``: how long holds last, how many there may be, and where they live."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from budget_exporter.core.fields import ConfigPath, Duration
from budget_exporter.core.redaction import redactor
from budget_exporter.core.secretfiles import SecretFileError, read_secret_file


class RedisConfig(BaseModel):
    """``global.check.holds.redis``: the Redis every replica shares its holds through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(max_length=2000)
    """``redis://host:6379/0``, or ``rediss://`` for TLS; no credentials in it."""
    username: str | None = Field(default=None, max_length=256)
    password_file: ConfigPath | None = None
    """A file holding the password (a mounted Secret); read when the exporter starts."""
    ca_file: ConfigPath | None = None
    """CA certificates for ``rediss://`` (default: the system's)."""
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    key_prefix: str = Field(
        default="{budget-exporter}:", min_length=1, max_length=100, pattern=r"^[^\s]+$"
    )
    """Prefix of every key (deployments sharing one Redis use different ones)."""
    timeout: Duration = timedelta(milliseconds=500)
    on_unavailable: Literal["fail_open", "fail_closed"] = "fail_open"
    """What a check does while Redis cannot be asked."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be a redis:// or rediss:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: use username and password_file")
        return value

    @field_validator("timeout")
    @classmethod
    def _short(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(seconds=10):
            raise ValueError("must be above 0 and at most 10s")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> RedisConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        if (self.ca_file or self.cert_file) and not self.url.startswith("rediss://"):
            raise ValueError("ca_file, cert_file and key_file need a rediss:// URL")
        try:
            self.password()  # unreadable now would be a failure at every check later
        except SecretFileError as exc:
            raise ValueError(str(exc)) from None
        return self

    def password(self) -> str | None:
        """The password from ``password_file`` (scrubbed from every log and answer)."""
        if self.password_file is None:
            return None
        value = read_secret_file(self.password_file, shown="global.check.holds.redis.password_file")
        assert isinstance(value, str)
        redactor.set_owned("holds:redis", {value} if value else set())
        return value or None


class HoldsConfig(BaseModel):
    """``global.check.holds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_ttl: Duration = timedelta(seconds=60)
    """How long a hold lasts when the check does not say (``hold_seconds``)."""
    max_ttl: Duration = timedelta(minutes=15)
    """The longest ``hold_seconds`` a check may ask for."""
    max_per_client: int = Field(default=1000, ge=1, le=1_000_000)
    max_total: int = Field(default=20_000, ge=1, le=10_000_000)
    visible_after: Duration = timedelta(minutes=2)
    """How long after a record a meter poll must start to be trusted to include it."""
    record_ttl: Duration = timedelta(hours=1)
    """The longest a recorded cost counts when no meter poll covers it first."""
    store: Literal["memory", "redis"] = "memory"
    redis: RedisConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HoldsConfig:
        for name in ("default_ttl", "max_ttl", "visible_after", "record_ttl"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be above 0")
        if self.default_ttl > self.max_ttl:
            raise ValueError("default_ttl must be at most max_ttl")
        if self.max_ttl > timedelta(days=1):
            raise ValueError("max_ttl must be at most 1d")
        if self.record_ttl < self.visible_after:
            raise ValueError("record_ttl must be at least visible_after")
        if self.store == "redis" and self.redis is None:
            raise ValueError("store: redis needs redis: {url: ...}")
        if self.store == "redis" and importlib.util.find_spec("redis") is None:
            raise ValueError(
                "store: redis needs the redis extra: pip install 'budget-exporter[redis]'"
            )
        return self
