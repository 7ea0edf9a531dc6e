"""What makes a large configuration load quickly changes nothing in what it loads: the
collector paused while loading."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from budget_exporter.config.loader import collector_paused, load_config
from budget_exporter.core.errors import ConfigError


def test_aliases_load_and_duplicates_keep_their_message(write_config) -> None:
    config = load_config(
        write_config(
            """
            sources:
              - {name: a, provider: static, amount: 5, currency: USD}
            budgets:
              - {name: b, limit: 10, currency: USD, sources: [a], labels: &team {team: x}}
              - {name: c, limit: 20, currency: USD, sources: [a], labels: *team}
            """
        )
    )
    assert [dict(b.labels) for b in config.budgets] == [{"team": "x"}, {"team": "x"}]
    with pytest.raises(ConfigError, match=r"line 2, column 15: duplicate key 'name'$"):
        load_config(
            write_config(
                "sources:\n  - {name: a, name: b, provider: static, amount: 5, currency: USD}\n"
            )
        )


def test_the_collector_is_back_as_it_was_after_a_load(write_config, tmp_path: Path) -> None:
    good = write_config(
        "sources: [{name: a, provider: static, amount: 5, currency: USD}]\n"
        "budgets: [{name: b, limit: 10, currency: USD, sources: [a]}]\n"
    )
    bad = write_config("sources: [{name: a, provider: nope}]\n", name="bad.yml")
    assert gc.isenabled()
    load_config(good)
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        load_config(bad)
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.yml")
    assert gc.isenabled()
    gc.disable()
    try:
        load_config(good)
        assert not gc.isenabled()  # not turned on behind the back of whoever turned it off
    finally:
        gc.enable()


def test_collector_paused_nests_and_says_whether_it_was_on() -> None:
    assert gc.isenabled()
    with collector_paused() as outer:
        assert outer is True and not gc.isenabled()
        with collector_paused() as inner:
            assert inner is False and not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not end the outer pause
    assert gc.isenabled()
