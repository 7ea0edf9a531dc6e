"""Configuration errors speak of the YAML the user wrote: the stray key, the entry's name, the
line, the value of a malformed URL; never the validation library's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from tests.support.exporter import run


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


OPENAI = "sources:\n  - name: openai\n    provider: openai\n"
BUDGETS = "budgets:\n  - {name: total, limit: 10, currency: USD}\n"


def test_a_misspelt_required_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = error_of(tmp_path, OPENAI + "    admin_key_flie: /run/key\n" + BUDGETS)
    assert message == (
        "sources[0].admin_key_flie: unknown field (did you mean 'admin_key_file'?) "
        "(source 'openai', line 4)"
    )


def test_a_scalar_where_a_list_goes_says_list(tmp_path: Path) -> None:
    text = OPENAI + "    admin_key: sk-x\n    group_by: project_id\n" + BUDGETS
    message = error_of(tmp_path, text)
    assert message == (
        "sources[0].group_by: must be a list: [a, b], or one item a line starting with - "
        "(source 'openai', line 5)"
    )
    assert "tuple" not in message


def test_a_malformed_url_shows_what_was_written_without_its_query(tmp_path: Path) -> None:
    text = OPENAI + "    admin_key: sk-x\n    base_url: api.openai.com/v1?key=s3cret\n" + BUDGETS
    message = error_of(tmp_path, text)
    assert message == (
        "sources[0].base_url: must be a URL starting with http:// or https:// "
        "(got 'api.openai.com/v1?...') (source 'openai', line 5)"
    )
    assert "s3cret" not in message and "^https?" not in message


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1 ", "https://api.openai.com/my proxy/v1"]
)
def test_a_url_with_white_space_is_refused_by_the_check_flag(tmp_path: Path, url: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(OPENAI + f"    admin_key: sk-x\n    base_url: '{url}'\n" + BUDGETS)
    checked = run("--config.file", str(path), "--config.check")
    assert checked.returncode == 1
    assert "sources[0].base_url: contains white space" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_a_budget_is_named_and_its_line_given(tmp_path: Path) -> None:
    text = (
        "sources:\n  - {name: s, provider: static, amount: 1, currency: USD}\n"
        "budgets:\n"
        "  - {name: fine, limit: 10, currency: USD}\n"
        "  - name: llm\n"
        "    currency: USD\n"
        "    limit: -5\n"
    )
    assert error_of(tmp_path, text) == (
        "budgets[1].limit: must be greater than zero (budget 'llm', line 7)"
    )


def test_a_cross_check_gets_the_line_of_its_field_too(tmp_path: Path) -> None:
    text = (
        "sources:\n  - {name: s, provider: static, amount: 1, currency: USD}\n"
        "budgets:\n"
        "  - name: llm\n"
        "    limit: 10\n"
        "    currency: USD\n"
        "    sources: [nope]\n"
    )
    message = error_of(tmp_path, text)
    assert message.startswith("budgets[0].sources") and "nope" in message
    assert message.endswith("(budget 'llm', line 7)")


def test_a_global_data_age_shorter_than_a_bills_poll_interval_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its budgets would be stale between two polls: a warning naming the source, once."""
    text = (
        "global: {check: {max_data_age: 30m}}\n"
        "sources:\n"
        "  - {name: fast, provider: static, amount: 1, currency: USD, poll_interval: 5m}\n"
        "  - {name: aws, provider: static, amount: 1, currency: USD, poll_interval: 1h}\n" + BUDGETS
    )
    path = tmp_path / "c.yml"
    path.write_text(text)
    load_config(path)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == (
        f"{path}: global.check.max_data_age (30m) is not longer than the poll interval of "
        "source 'aws' (1h): its budgets are stale between two polls; lengthen it, or give "
        "that source a max_data_age of its own"
    )
    caplog.clear()
    path.write_text(text.replace("poll_interval: 1h}", "poll_interval: 1h, max_data_age: 2h}"))
    load_config(path)
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
