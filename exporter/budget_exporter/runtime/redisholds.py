"""Holds shared by several exporters through Redis: check-and-hold as one Lua script.

Keys (all under the configured prefix, each expiring by itself): ``h:<id>`` a hold,
``b:<budget>`` a budget's entries scored by expiry, ``c:<client>`` and ``all`` the holds
in flight, ``k:<client>:<key>`` an idempotency key, ``budgets`` the budgets with entries.
Amounts are in millionths of the currency unit.  Failure policy and rationale:
docs/check-api.md, "Several replicas (Redis)".
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from budget_exporter.accounting.holds import (
    Entry,
    HoldRefused,
    HoldRequest,
    HoldSettings,
    Outcome,
    Room,
)
from budget_exporter.core.redaction import redactor
from budget_exporter.runtime.holds import limit_message, new_hold_id

log = logging.getLogger(__name__)

MICROS = Decimal(1_000_000)
INFINITE = "inf"
RETRY_AFTER = 1.0
"""Seconds a failed Redis is left alone before it is asked again (checks follow the policy)."""

_COMMON = """
local function covered(sources, recorded, cov)
  if recorded == false or recorded == '' or sources == false or sources == '' then
    return false
  end
  local r = tonumber(recorded)
  for s in string.gmatch(sources, '[^,]+') do
    local c = cov[s]
    if c == nil or c < r then return false end
  end
  return true
end

local function parse_covered(text)
  local cov = {}
  for name, ms in string.gmatch(text, '([^,=]+)=([^,]+)') do cov[name] = tonumber(ms) end
  return cov
end

local function held(prefix, zkey, now, cov)
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  local total = 0
  for _, id in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
    local f = redis.call('HMGET', prefix .. 'h:' .. id, 'amount', 'recorded_at', 'sources')
    if f[1] then
      if not covered(f[3], f[2], cov) then total = total + tonumber(f[1]) end
    else
      redis.call('ZREM', zkey, id)
    end
  end
  return total
end
"""

CHECK_SCRIPT = (
    _COMMON
    + """
-- KEYS: budget sets..., client set, all set, idempotency key
-- ARGV: prefix, now_ms, cost, n, covered, hold, id, client, key, ttl_ms, max_client,
--       max_total, currency, sources, keep_ms, then per budget: name, headroom, deny
local prefix, now, cost, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cov = parse_covered(ARGV[5])
local hold = ARGV[6] == '1'
local ckey, akey, kkey = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local sums = {}
local allowed = 1
for i = 1, n do
  local base = 15 + (i - 1) * 3
  local total = held(prefix, KEYS[i], now, cov)
  sums[i] = tostring(total)
  local headroom, deny = ARGV[base + 2], ARGV[base + 3]
  if deny == '1' then
    allowed = 0
  elseif headroom ~= 'inf' and total + cost >= tonumber(headroom) then
    allowed = 0
  end
end
if hold and ARGV[9] ~= '' then
  local earlier = redis.call('GET', kkey)
  if earlier then
    local fields = redis.call('HGETALL', prefix .. 'h:' .. earlier)
    if #fields > 0 then return {1, 1, earlier, sums, fields} end
  end
end
if allowed == 0 or not hold then return {allowed, 0, '', sums, {}} end
redis.call('ZREMRANGEBYSCORE', ckey, '-inf', now)
redis.call('ZREMRANGEBYSCORE', akey, '-inf', now)
if redis.call('ZCARD', ckey) >= tonumber(ARGV[11]) then return {-1, 0, 'client', sums, {}} end
if redis.call('ZCARD', akey) >= tonumber(ARGV[12]) then return {-1, 0, 'total', sums, {}} end
local id, ttl, keep = ARGV[7], tonumber(ARGV[10]), tonumber(ARGV[15])
local expires = now + ttl
local names = {}
for i = 1, n do names[i] = ARGV[15 + (i - 1) * 3 + 1] end
local hkey = prefix .. 'h:' .. id
redis.call('HSET', hkey, 'client', ARGV[8], 'key', ARGV[9], 'budgets', table.concat(names, ','),
  'amount', ARGV[3], 'currency', ARGV[13], 'created', ARGV[2], 'expires', tostring(expires),
  'recorded_at', '', 'sources', ARGV[14])
redis.call('PEXPIRE', hkey, ttl + 1000)
for i = 1, n do
  redis.call('ZADD', KEYS[i], expires, id)
  redis.call('PEXPIRE', KEYS[i], keep)
  redis.call('SADD', prefix .. 'budgets', names[i])
end
redis.call('ZADD', ckey, expires, id)
redis.call('PEXPIRE', ckey, keep)
redis.call('ZADD', akey, expires, id)
redis.call('PEXPIRE', akey, keep)
redis.call('PEXPIRE', prefix .. 'budgets', keep)
if ARGV[9] ~= '' then redis.call('SET', kkey, id, 'PX', ttl + 1000) end
return {1, 0, id, sums, redis.call('HGETALL', hkey)}
"""
)

RELEASE_SCRIPT = """
-- KEYS: the hold; ARGV: prefix, now_ms, actual, record_ttl_ms, keep_ms, id
local prefix, now, actual, ttl, keep, id = ARGV[1], tonumber(ARGV[2]), ARGV[3],
  tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local fields = redis.call('HMGET', KEYS[1], 'client', 'key', 'budgets', 'recorded_at', 'expires')
if not fields[1] or tonumber(fields[5]) <= now then return {0} end
if fields[4] ~= '' then return {2, redis.call('HGETALL', KEYS[1])} end
redis.call('ZREM', prefix .. 'c:' .. fields[1], id)
redis.call('ZREM', prefix .. 'all', id)
local kkey = prefix .. 'k:' .. fields[1] .. ':' .. fields[2]
if tonumber(actual) == 0 then
  for b in string.gmatch(fields[3], '[^,]+') do redis.call('ZREM', prefix .. 'b:' .. b, id) end
  redis.call('DEL', KEYS[1])
  if fields[2] ~= '' then redis.call('DEL', kkey) end
  return {1}
end
local expires = now + ttl
redis.call('HSET', KEYS[1], 'amount', actual, 'recorded_at', tostring(now),
  'expires', tostring(expires))
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
for b in string.gmatch(fields[3], '[^,]+') do
  redis.call('ZADD', prefix .. 'b:' .. b, expires, id)
  redis.call('PEXPIRE', prefix .. 'b:' .. b, keep)
end
if fields[2] ~= '' then redis.call('PEXPIRE', kkey, ttl + 1000) end
return {2, redis.call('HGETALL', KEYS[1])}
"""

HELD_SCRIPT = (
    _COMMON
    + """
-- ARGV: prefix, now_ms, covered
local prefix, now = ARGV[1], tonumber(ARGV[2])
local cov = parse_covered(ARGV[3])
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'budgets')) do
  local zkey = prefix .. 'b:' .. name
  local total = held(prefix, zkey, now, cov)
  if redis.call('EXISTS', zkey) == 0 then redis.call('SREM', prefix .. 'budgets', name) end
  if total > 0 then
    table.insert(out, name)
    table.insert(out, tostring(total))
  end
end
return out
"""
)


def micros(amount: Decimal, rounding: str = ROUND_CEILING) -> int:
    """``amount`` in millionths of the unit, rounded up (costs) or down."""
    return int((amount * MICROS).to_integral_value(rounding=rounding))


def _amount(text: Any) -> Decimal:
    return Decimal(_text(text)) / MICROS


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


class RedisHolds:
    """Holds in a Redis shared by every replica."""

    kind = "redis"

    def __init__(self, settings: HoldSettings, redis_settings: Any, client: Any = None) -> None:
        self.settings = settings
        self.prefix: str = redis_settings.key_prefix
        self.on_unavailable: str = redis_settings.on_unavailable
        self._client = client if client is not None else _connect(redis_settings)
        self._check = self._client.register_script(CHECK_SCRIPT)
        self._release = self._client.register_script(RELEASE_SCRIPT)
        self._held = self._client.register_script(HELD_SCRIPT)
        self._lock = threading.Lock()
        self._up = True
        self._down_until = 0.0
        self._warned = False

    def configure(self, settings: HoldSettings) -> None:
        self.settings = settings

    def up(self) -> bool:
        return self._up

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a broken connection must not fail a shutdown
            log.debug("closing the Redis client failed", exc_info=True)

    # -- failure handling ---------------------------------------------------------------

    def _available(self) -> bool:
        return self._up or time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> str:
        why = redactor(f"{type(exc).__name__}: {exc}")[:200]
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER
            first = self._up
            self._up = False
        if first:
            log.error("holds store (redis) unreachable: %s; checks follow %s", why, self._policy)
        return f"holds store (redis) unreachable ({type(exc).__name__})"

    def _answered(self) -> None:
        if not self._up:
            with self._lock:
                self._up = True
            log.info("holds store (redis) answers again")

    @property
    def _policy(self) -> str:
        return f"global.check.holds.redis.on_unavailable: {self.on_unavailable}"

    def _unavailable(self, rooms: tuple[Room, ...], cost: Decimal, why: str) -> Outcome:
        if self.on_unavailable == "fail_closed":
            return Outcome(False, {}, store_error=f"{why}: denied by {self._policy}")
        allowed = all(room.fits(Decimal(0), cost) for room in rooms)
        return Outcome(
            allowed,
            {},
            store_error=f"{why}: checked without holds and nothing held, by {self._policy}",
        )

    # -- the store ----------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def _keep_ms(self) -> int:
        return _ms(self.settings.max_ttl + self.settings.record_ttl) + 1000

    def check(
        self,
        rooms: tuple[Room, ...],
        cost: Decimal,
        currency: str,
        request: HoldRequest | None,
        now: float,
        covered_until: Mapping[str, float],
    ) -> Outcome:
        if not self._available():
            return self._unavailable(rooms, cost, "holds store (redis) unreachable")
        settings = self.settings
        client = request.client if request is not None else ""
        key = request.key if request is not None and request.key else ""
        keys = [self._key("b", room.budget) for room in rooms]
        keys += [self._key("c", client), f"{self.prefix}all", self._key("k", f"{client}:{key}")]
        args: list[Any] = [
            self.prefix,
            _ms(now),
            micros(cost),
            len(rooms),
            _covered_text(covered_until),
            "1" if request is not None else "0",
            new_hold_id(),
            client,
            key,
            _ms(request.ttl) if request is not None else 0,
            settings.max_per_client,
            settings.max_total,
            currency,
            ",".join(request.sources) if request is not None else "",
            self._keep_ms,
        ]
        for room in rooms:
            headroom = INFINITE if room.headroom is None else micros(room.headroom, ROUND_FLOOR)
            args += [room.budget, headroom, "1" if room.deny else "0"]
        try:
            result = self._check(keys=keys, args=args)
        except Exception as exc:  # redis errors, timeouts, refused credentials
            if not _is_redis_error(exc):
                raise
            return self._unavailable(rooms, cost, self._failed(exc))
        self._answered()
        status, replayed, hold_id, sums, fields = result
        held = {room.budget: _amount(s) for room, s in zip(rooms, sums, strict=True)}
        if status == -1:
            which = _text(hold_id)
            limit = settings.max_per_client if which == "client" else settings.max_total
            raise HoldRefused(429, limit_message(which, limit))
        entry = _entry(_text(hold_id), fields) if fields else None
        return Outcome(bool(status), held, entry, replayed=bool(replayed))

    def release(self, hold_id: str, actual: Decimal | None, now: float) -> Entry | None:
        if not self._available():
            raise HoldRefused(503, "holds store (redis) unreachable: the hold ends at its expiry")
        try:
            result = self._release(
                keys=[self._key("h", hold_id)],
                args=[
                    self.prefix,
                    _ms(now),
                    micros(actual or Decimal(0)),
                    _ms(self.settings.record_ttl),
                    self._keep_ms,
                    hold_id,
                ],
            )
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise HoldRefused(503, f"{self._failed(exc)}: the hold ends at its expiry") from None
        self._answered()
        if result[0] == 0:
            raise HoldRefused(404, f"no hold {hold_id!r} (released without cost, or expired)")
        if result[0] == 1:
            return None
        return _entry(hold_id, result[1])

    def held(self, now: float, covered_until: Mapping[str, float]) -> dict[str, Decimal]:
        if not self._available():
            return {}
        try:
            flat = self._held(args=[self.prefix, _ms(now), _covered_text(covered_until)])
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            self._failed(exc)
            return {}
        self._answered()
        return {_text(flat[i]): _amount(flat[i + 1]) for i in range(0, len(flat), 2)}


def _covered_text(covered_until: Mapping[str, float]) -> str:
    return ",".join(f"{name}={_ms(ts)}" for name, ts in covered_until.items())


def _entry(hold_id: str, fields: list[Any]) -> Entry:
    values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields), 2)}
    recorded = values.get("recorded_at", "")
    return Entry(
        id=hold_id,
        client=values.get("client", ""),
        key=values.get("key") or None,
        budgets=tuple(b for b in values.get("budgets", "").split(",") if b),
        amount=_amount(values.get("amount", "0")),
        currency=values.get("currency", ""),
        created=int(values.get("created", "0")) / 1000,
        expires=int(values.get("expires", "0")) / 1000,
        recorded_at=int(recorded) / 1000 if recorded else None,
        sources=tuple(s for s in values.get("sources", "").split(",") if s),
    )


def _is_redis_error(exc: Exception) -> bool:
    import redis

    return isinstance(exc, redis.RedisError | OSError)


def _connect(settings: Any) -> Any:
    """A client for ``settings`` (``url``, credentials, TLS), without retries of its own."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": settings.timeout.total_seconds(),
        "socket_connect_timeout": settings.timeout.total_seconds(),
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if settings.username:
        options["username"] = settings.username
    password = settings.password()
    if password:
        options["password"] = password
    if settings.url.startswith("rediss://"):
        if settings.ca_file:
            options["ssl_ca_certs"] = str(settings.ca_file)
        if settings.cert_file:
            options["ssl_certfile"] = str(settings.cert_file)
            options["ssl_keyfile"] = str(settings.key_file) if settings.key_file else None
    return redis.Redis.from_url(settings.url, **options)
