"""Settings of the spend-rate alerts: budget keys with global defaults, exported as gauges."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config.loader import load_config
from budget_exporter.config.tuning import KEYS, AlertTuning, GlobalTuning
from budget_exporter.core.errors import ConfigError

CONFIG = """
global:
  anomaly_factor: 4
  burn_rate_warning_horizon: 10d
sources:
  - {name: s, provider: static, amount: 5, currency: USD}
budgets:
  - {name: plain, limit: 100, currency: USD, sources: [s]}
  - name: tuned
    limit: 100
    currency: USD
    sources: [s]
    anomaly_factor: 2.5
    anomaly_min_daily_amount: 0
    anomaly_min_history: 3d
    burn_rate_critical_horizon: 12h
"""

GAUGES = {
    "budget_anomaly_threshold_ratio": ("anomaly_factor", float),
    "budget_anomaly_min_daily_amount": ("anomaly_min_daily_amount", float),
    "budget_anomaly_min_history_seconds": ("anomaly_min_history", timedelta.total_seconds),
    "budget_burn_rate_critical_horizon_seconds": (
        "burn_rate_critical_horizon",
        timedelta.total_seconds,
    ),
    "budget_burn_rate_warning_horizon_seconds": (
        "burn_rate_warning_horizon",
        timedelta.total_seconds,
    ),
}


def test_defaults_are_the_same_in_global_and_in_a_budget() -> None:
    assert {key: getattr(GlobalTuning(), key) for key in KEYS} == AlertTuning().__dict__
    assert AlertTuning() == AlertTuning(
        anomaly_factor=3.0,
        anomaly_min_daily_amount=Decimal(10),
        anomaly_min_history=timedelta(days=7),
        burn_rate_critical_horizon=timedelta(days=3),
        burn_rate_warning_horizon=timedelta(days=7),
    )


def test_a_budget_overrides_what_it_sets_and_inherits_the_rest(write_config) -> None:
    config = load_config(write_config(CONFIG))
    plain, tuned = (config.alert_tuning(b) for b in config.budgets)
    assert plain == AlertTuning(anomaly_factor=4.0, burn_rate_warning_horizon=timedelta(days=10))
    assert tuned == AlertTuning(
        anomaly_factor=2.5,
        anomaly_min_daily_amount=Decimal(0),  # 0 is a value, not "unset"
        anomaly_min_history=timedelta(days=3),
        burn_rate_critical_horizon=timedelta(hours=12),
        burn_rate_warning_horizon=timedelta(days=10),
    )


def test_every_budget_exports_its_own_settings(make_engine) -> None:
    engine = make_engine(CONFIG)
    assert engine.poll_all_once()
    families = {
        f.name: f for f in text_string_to_metric_families(engine.snapshot.rendered.text.decode())
    }
    config = engine.config
    expected = {b.name: config.alert_tuning(b) for b in config.budgets}
    for name, (key, convert) in GAUGES.items():
        family = families[name]
        assert family.type == "gauge"
        got = {s.labels["budget"]: s.value for s in family.samples}
        assert got == {budget: convert(getattr(t, key)) for budget, t in expected.items()}, name
        labels = {tuple(sorted(s.labels)) for s in family.samples}
        assert labels == {("budget", "currency", "period")}
    assert {
        s.labels["budget"]: s.value for s in families["budget_anomaly_threshold_ratio"].samples
    } == {
        "plain": 4.0,
        "tuned": 2.5,
    }


@pytest.mark.parametrize(
    ("setting", "where", "reason"),
    [
        ("anomaly_factor: 1", "budgets[0].anomaly_factor", "greater than 1"),
        ("anomaly_factor: .inf", "budgets[0].anomaly_factor", "finite"),
        ("anomaly_min_daily_amount: -1", "budgets[0].anomaly_min_daily_amount", "0"),
        ("anomaly_min_history: 0s", "budgets[0].anomaly_min_history", "greater than zero"),
        ("burn_rate_warning_horizon: 1", "budgets[0].burn_rate_warning_horizon", "duration"),
        (
            "burn_rate_critical_horizon: 11d",
            "budgets[0].burn_rate_critical_horizon",
            "must not be longer than burn_rate_warning_horizon",
        ),
        (
            "burn_rate_warning_horizon: 2d",
            "budgets[0].burn_rate_warning_horizon",
            "must not be longer than burn_rate_warning_horizon",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(
    write_config, setting: str, where: str, reason: str
) -> None:
    text = CONFIG.replace(
        "  - {name: plain, limit: 100, currency: USD, sources: [s]}",
        f"  - {{name: plain, limit: 100, currency: USD, sources: [s], {setting}}}",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(text))
    assert caught.value.path == where
    assert reason in caught.value.message


def test_global_horizons_must_be_ordered(write_config) -> None:
    text = CONFIG.replace("  anomaly_factor: 4\n", "  burn_rate_critical_horizon: 11d\n")
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(text))
    assert caught.value.path == "global.burn_rate_warning_horizon"
