"""``budget_exporter.pricing`` and the shipped price table."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from budget_exporter.pricing import (
    TOKEN_TYPES,
    ModelPrice,
    PricingConfig,
    PricingError,
    UnknownModelError,
    default_table,
    estimate,
    load_price_table,
)
from tests.support.paths import ROOT


def test_shipped_table_is_package_data_with_a_date() -> None:
    raw = yaml.safe_load(files("budget_exporter.pricing").joinpath("data/prices.yml").read_text())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(raw["taken"]))
    table = default_table()
    assert table.taken == date.fromisoformat(str(raw["taken"]))
    assert table.currency == "USD" and table.per_tokens == 1_000_000
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-3-5-haiku"} <= set(table.models)
    for name, price in table.models.items():
        assert price.input >= 0 and price.output >= 0, name


def test_pyproject_ships_the_table() -> None:
    pyproject = ROOT / "pyproject.toml"
    assert '"data/*.yml"' in pyproject.read_text()


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        # 12k x 2.50 + 800 x 10.00 per million
        ("gpt-4o", (12_000, 800, 0, 0), Decimal("0.038")),
        ("gpt-4o-2024-08-06", (12_000, 800, 0, 0), Decimal("0.038")),
        ("GPT-4o-mini", (1_000_000, 1_000_000, 0, 0), Decimal("0.75")),
        # cached input at 1.25
        ("gpt-4o", (0, 0, 1_000_000, 0), Decimal("1.25")),
        # Anthropic: dated id, cache write at 3.75, cache read at 0.30
        ("claude-sonnet-4-20250514", (1_000_000, 0, 1_000_000, 1_000_000), Decimal("7.05")),
        ("claude-3-5-haiku-latest", (0, 1_000_000, 0, 0), Decimal("4")),
        ("text-embedding-3-small", (1_000_000, 0, 0, 0), Decimal("0.02")),
    ],
)
def test_estimates(model: str, tokens: tuple[int, int, int, int], expected: Decimal) -> None:
    inp, out, cached, write = tokens
    got = estimate(model, inp, out, cached_input_tokens=cached, cache_write_tokens=write)
    assert isinstance(got, Decimal)
    assert got == expected


def test_unknown_model_is_an_error_never_zero() -> None:
    with pytest.raises(UnknownModelError) as caught:
        estimate("gpt-9-ultra", 1000, 1000)
    message = str(caught.value)
    assert "gpt-9-ultra" in message and "default price" in message
    assert default_table().taken.isoformat() in message
    # A name that merely starts like a known model is not that model.
    with pytest.raises(UnknownModelError):
        estimate("gpt-4o-mini-transcribe", 1000, 0)


def test_a_configured_default_prices_unknown_models() -> None:
    table = load_price_table(default={"input": 10, "output": 30})
    assert table.estimate("gpt-9-ultra", 100_000, 100_000) == Decimal("4")
    assert table.estimate("gpt-4o", 1_000_000, 0) == Decimal("2.5")  # known models keep their price


def test_cache_prices_fall_back_to_the_input_price() -> None:
    price = ModelPrice(input=Decimal(2), output=Decimal(8))
    assert price.of("cached_input") == 2 and price.of("cache_write") == 2
    assert price.of("cache_write_1h") == 2
    assert ModelPrice(input=2, output=8, cache_write=3).of("cache_write_1h") == 3
    with pytest.raises(ValueError, match="unknown token type"):
        price.of("audio")
    assert set(TOKEN_TYPES) == {"input", "cached_input", "cache_write", "cache_write_1h", "output"}


def test_negative_tokens_and_prices_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        estimate("gpt-4o", -1, 0)
    with pytest.raises(ValueError, match="negative"):
        ModelPrice(input=-1, output=0)


def test_user_file_overrides_and_extends_the_shipped_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.yml"
    path.write_text(
        "taken: 2026-11-01\n"
        "currency: USD\n"
        "per_tokens: 1000\n"
        "models:\n"
        "  gpt-4o: {input: 0.005, output: 0.02}\n"
        "  acme-llm: {input: 0.001, output: 0.001}\n"
    )
    table = load_price_table(path)
    assert table.taken == date(2026, 11, 1) and table.per_tokens == 1000
    assert table.estimate("gpt-4o", 1000, 1000) == Decimal("0.025")
    assert table.estimate("acme-llm", 2000, 0) == Decimal("0.002")
    # Shipped models not in the file keep their price, rescaled to the file's unit.
    assert table.estimate("gpt-4o-mini", 1_000_000, 0) == Decimal("0.15")


def test_a_table_in_another_currency_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "eur.yml"
    path.write_text(
        "taken: 2026-11-02\ncurrency: eur\nmodels:\n  gpt-4o: {input: 2.3, output: 9.2}\n"
    )
    table = load_price_table(path)
    assert table.currency == "EUR"
    assert table.estimate("gpt-4o", 1_000_000, 0) == Decimal("2.3")
    assert not table.knows("gpt-4o-mini")


def test_inline_models_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("taken: 2026-11-01\nmodels:\n  gpt-4o: {input: 1, output: 1}\n")
    config = PricingConfig(file=str(path), models={"GPT-4o": {"input": 7, "output": 0}})
    assert config.table().estimate("gpt-4o", 1_000_000, 0) == Decimal(7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {}\n", "taken"),
        ("taken: soon\nmodels: {}\n", "taken"),
        ("taken: 2026-01-01\nmodels: {x: {output: 1}}\n", "models.x.input"),
        ("taken: 2026-01-01\nmodels: {x: {input: 1, output: 1, typo: 2}}\n", "typo"),
        ("taken: 2026-01-01\nmodels: {x: {input: 3}}\n", "models.x.output: field required"),
        ("taken: 2026-01-01\ndefault: {input: 3}\n", "default.output: field required"),
        ("taken: 2026-01-01\ncurrency: dollars\n", "currency"),
        ("- just a list\n", "must be a mapping"),
        ("taken: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_tables_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(PricingError, match=re.escape(message)):
        load_price_table(path)


def test_an_output_price_is_required_never_a_silent_zero() -> None:
    with pytest.raises(ValidationError, match="output"):
        ModelPrice(input=3)
    with pytest.raises(PricingError, match=r"output: field required.*0 for models with no output"):
        load_price_table(models={"acme": {"input": 3}})
    with pytest.raises(PricingError, match="output"):
        load_price_table(default={"input": 3})
    with pytest.raises(ValidationError, match="output"):
        PricingConfig.model_validate({"models": {"acme": {"input": 3}}})
    # An explicit 0 is fine (embeddings have no output tokens).
    assert ModelPrice(input=3, output=0).of("output") == 0


def test_a_relative_file_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "p.yml").write_text("taken: 2026-11-03\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    config = PricingConfig.model_validate(
        {"file": "p.yml"}, context={"config_dir": str(tmp_path / "conf")}
    )
    assert config.file == str(tmp_path / "conf" / "p.yml")
    assert config.table().taken == date(2026, 11, 3)
    # Without a config folder (a PricingConfig built in code), the working directory.
    with pytest.raises(ValidationError) as caught:
        PricingConfig.model_validate({"file": "p.yml"})
    error = caught.value.errors()[0]
    assert error["loc"] == ("file",)
    assert str(tmp_path / "cwd" / "p.yml") in error["msg"]
    (tmp_path / "cwd" / "p.yml").write_text("taken: 2026-11-04\n")
    assert PricingConfig(file="p.yml").table().taken == date(2026, 11, 4)
    # An absolute path is used as it is.
    absolute = PricingConfig.model_validate(
        {"file": str(tmp_path / "cwd" / "p.yml")}, context={"config_dir": str(tmp_path / "conf")}
    )
    assert absolute.table().taken == date(2026, 11, 4)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match=r"nope\.yml"):
        load_price_table(tmp_path / "nope.yml")
