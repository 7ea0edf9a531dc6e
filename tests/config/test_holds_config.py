"""``global.check.holds``: defaults, the Redis settings and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.runtime.holds import hold_config

BASE = "sources: [{name: s, provider: static, amount: 1, currency: USD}]\n"


def load(tmp_path: Path, holds: str) -> object:
    path = tmp_path / "c.yml"
    path.write_text(f"global: {{check: {{holds: {holds}}}}}\n" + BASE)
    return load_config(path)


def test_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(BASE)
    settings, redis = hold_config(load_config(path))
    assert (settings.default_ttl, settings.max_ttl, settings.visible_after) == (60, 900, 120)
    assert (settings.max_per_client, settings.max_total, settings.record_ttl) == (1000, 20000, 3600)
    assert redis is None


def test_redis_settings(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw\n")
    config = load(
        tmp_path,
        "{store: redis, default_ttl: 30s, max_ttl: 2m, visible_after: 10s,"
        " redis: {url: 'rediss://redis:6380/1', password_file: pw, ca_file: ca.pem}}",
    )
    settings, redis = hold_config(config)  # type: ignore[arg-type]
    assert settings.default_ttl == 30 and settings.max_ttl == 120 and settings.visible_after == 10
    assert redis.url == "rediss://redis:6380/1" and redis.on_unavailable == "fail_open"
    assert redis.password_file == str(tmp_path / "pw") and redis.password() == "pw"
    assert redis.key_prefix == "{budget-exporter}:" and redis.timeout.total_seconds() == 0.5


@pytest.mark.parametrize(
    ("holds", "error"),
    [
        ("{store: redis}", "store: redis needs redis"),
        ("{store: disk}", "global.check.holds.store"),
        ("{default_ttl: 1h}", "default_ttl must be at most max_ttl"),
        ("{max_ttl: 2d, default_ttl: 1m}", "max_ttl must be at most 1d"),
        ("{max_per_client: 0}", "global.check.holds.max_per_client"),
        ("{record_ttl: 1m}", "record_ttl must be at least visible_after"),
        ("{redis: {url: 'http://x'}}", "redis:// or rediss://"),
        ("{redis: {url: 'redis://u:secretpw@x'}}", "must not carry credentials"),
        ("{redis: {url: 'redis://x', ca_file: ca.pem}}", "need a rediss:// URL"),
        ("{redis: {url: 'rediss://x', cert_file: c.pem}}", "both cert_file and key_file"),
        ("{redis: {url: 'redis://x', timeout: 1m}}", "at most 10s"),
        ("{redis: {url: 'redis://x', on_unavailable: maybe}}", "on_unavailable"),
        ("{ttl: 1m}", "global.check.holds.ttl"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path: Path, holds: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        load(tmp_path, holds)
    assert "secretpw" not in str(caught.value)


def test_an_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot read global\.check\.holds\.redis\.password_file"
    ):
        load(tmp_path, "{redis: {url: 'redis://x', password_file: missing}}")


def test_redis_without_its_extra_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'budget-exporter\[redis\]'"):
        load(tmp_path, "{store: redis, redis: {url: 'redis://x'}}")
