"""``--web.config.file``: TLS and basic auth, in the exporter-toolkit format (see
docs/security.md#tls-and-basic-auth).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from budget_exporter.core.errors import ConfigError


class TLSServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert_file: str
    key_file: str
    client_auth_type: Literal[
        "NoClientCert", "RequestClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> TLSServerConfig:
        verifies = self.client_auth_type in (
            "VerifyClientCertIfGiven",
            "RequireAndVerifyClientCert",
        )
        if verifies and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        return self


# The response headers exporter-toolkit lets users set: security headers only.
_ALLOWED_HEADERS = frozenset(
    {
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "X-XSS-Protection",
        "Content-Security-Policy",
    }
)
_BCRYPT = re.compile(r"^\$2[aby]?\$\d{2}\$[./A-Za-z0-9]{53}$")


class HTTPServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _security_headers_only(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in _ALLOWED_HEADERS:
                allowed = ", ".join(sorted(_ALLOWED_HEADERS))
                raise ValueError(f"header {name!r} cannot be set (allowed: {allowed})")
        return value


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if not _BCRYPT.match(hashed):
                raise ValueError(f"the password of {user!r} is not a bcrypt hash")
        return value

    def ssl_context(self, base: Path) -> ssl.SSLContext | None:
        tls = self.tls_server_config
        if tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
        )
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_auth_type != "NoClientCert":
            if tls.client_ca_file:
                context.load_verify_locations(base / tls.client_ca_file)
            context.verify_mode = (
                ssl.CERT_REQUIRED
                if tls.client_auth_type == "RequireAndVerifyClientCert"
                else ssl.CERT_OPTIONAL
            )
        return context


class AuthBusy(Exception):
    """Too many password checks are waiting: answer 503 with ``Retry-After``, not 401."""


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, as exporter-toolkit does.

    bcrypt is deliberately slow (a quarter of a second at cost 12), so:

    * checks run one at a time, in one thread of their own: a flood of wrong
      passwords gets one core at most (not at a lower priority: that thread also
      takes the GIL, and a descheduled GIL holder would stall every request);
    * at most ``max_pending`` checks wait or run at once, and a request waits at
      most ``max_wait`` seconds for its own: past either, :meth:`check` raises
      :class:`AuthBusy` at once (a flood holds no more than ``max_pending``
      connection threads, and a scraper whose password is not cached yet learns
      within seconds that it should retry, rather than queueing for minutes); a
      check given up on still runs and its outcome is cached for the retry;
    * outcomes are remembered by a SHA-256 of user, password and hash: Prometheus
      scrapes with the same credentials every few seconds and is answered from
      the cache without waiting for the bcrypt queue; failures are remembered
      apart (and forgotten first), so a flood of guesses cannot push a good
      pair out;
    * an unknown user is checked against a dummy hash of the same cost, so the
      answer takes as long as for a known one and cannot reveal user names.
    """

    MAX_REMEMBERED = 1024
    MAX_PENDING = 16
    """Checks waiting or running at once: some 5 s of bcrypt at cost 12."""
    MAX_WAIT = 5.0
    """Seconds a request waits for its check: half of Prometheus' default scrape timeout."""

    def __init__(
        self,
        users: dict[str, str],
        max_pending: int = MAX_PENDING,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        self.max_pending = max_pending
        self.max_wait = max_wait
        self._succeeded: OrderedDict[bytes, None] = OrderedDict()
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._checker = ThreadPoolExecutor(1, "bcrypt")
        self._pending = 0
        self._dummy: bytes | None = None

    @property
    def pending(self) -> int:
        """Checks waiting for the bcrypt thread or running in it."""
        with self._cache_lock:
            return self._pending

    def check(self, user: str, password: str) -> bool:
        """Whether the pair is right; :class:`AuthBusy` when it cannot be told in time."""
        known = user in self.users
        hashed = self.users.get(user, self._dummy)
        if hashed is not None:
            outcome = self._remembered(_cache_key(user, password, hashed))
            if outcome is not None:
                return known and outcome
        with self._cache_lock:
            if self._pending >= self.max_pending:
                raise AuthBusy
            self._pending += 1
        future = self._checker.submit(self._check, user, password)
        try:
            outcome = future.result(timeout=self.max_wait)
        except TimeoutError:
            raise AuthBusy from None
        return known and outcome

    def _check(self, user: str, password: str) -> bool:
        """In the checker thread: bcrypt, unless the same check ran while this one queued."""
        try:
            hashed = self.users.get(user) or self._dummy_hash()
            key = _cache_key(user, password, hashed)
            outcome = self._remembered(key)
            if outcome is None:
                outcome = _checkpw(password, hashed)
                self._remember(key, outcome)
            return outcome
        finally:
            with self._cache_lock:
                self._pending -= 1

    def _remembered(self, key: bytes) -> bool | None:
        with self._cache_lock:
            for cache, outcome in ((self._succeeded, True), (self._failed, False)):
                if key in cache:
                    cache.move_to_end(key)
                    return outcome
        return None

    def _remember(self, key: bytes, outcome: bool) -> None:
        cache = self._succeeded if outcome else self._failed
        with self._cache_lock:
            cache[key] = None
            if len(cache) > self.MAX_REMEMBERED:
                cache.popitem(last=False)

    def _dummy_hash(self) -> bytes:
        """In the checker thread: a hash of a random password at the users' highest cost."""
        import bcrypt

        if self._dummy is None:
            cost = max(int(h.split(b"$")[2]) for h in self.users.values())
            secret = secrets.token_bytes(16).hex().encode()
            self._dummy = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost))
        return self._dummy


def _cache_key(user: str, password: str, hashed: bytes) -> bytes:
    return hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()


def _checkpw(password: str, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode(), hashed)
    except ValueError:  # a password over 72 bytes (bcrypt 5 refuses it)
        return False


def load_web_config(path: str) -> tuple[WebConfig, ssl.SSLContext | None]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(path, "", f"cannot read web config: {type(exc).__name__}") from None
    try:
        config = WebConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ConfigError(path, where, error["msg"].removeprefix("Value error, ")) from None
    try:
        context = config.ssl_context(Path(path).parent)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(path, "tls_server_config", f"cannot load TLS files: {exc}") from None
    return config, context
