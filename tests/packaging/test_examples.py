"""Every example configuration is valid, with placeholder values for its variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from budget_exporter.config.loader import load_config
from tests.support.extras import providers_in, skip_unless_installed_for
from tests.support.paths import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))


def placeholder(name: str, tmp_path: Path) -> str:
    if name.endswith("_FILE"):
        path = tmp_path / name.lower()
        path.write_text("placeholder-secret-value\n")
        return str(path)
    if name.endswith("SUBSCRIPTION_ID"):
        return "00000000-0000-0000-0000-000000000000"
    if name.endswith("BILLING_ACCOUNT"):
        return "01A2B3-C4D5E6-F7A8B9"
    if name.endswith("BILLING_ACCOUNT_UNDERSCORED"):
        return "01A2B3_C4D5E6_F7A8B9"
    return "placeholder-value"


def test_there_are_examples_for_every_setup() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"demo", "aws", "gcp", "azure", "llm", "multi-cloud", "global"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(path: Path, tmp_path: Path) -> None:
    skip_unless_installed_for(providers_in(path.read_text()))
    variables = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    config = load_config(path, env={v: placeholder(v, tmp_path) for v in variables})
    assert config.sources
    assert config.budgets


def test_global_example_spans_every_kind_of_source() -> None:
    path = ROOT / "examples" / "global.yml"
    skip_unless_installed_for(providers_in(path.read_text()))
    config = load_config(
        path,
        env={
            v: "placeholder-value"
            for v in (
                "OPENAI_ADMIN_KEY",
                "ANTHROPIC_ADMIN_KEY",
                "HUNTER_API_KEY",
                "GCP_BILLING_ACCOUNT_UNDERSCORED",
            )
        },
    )
    glob = next(b for b in config.budgets if b.name == "global")
    assert glob.limit == 3000 and glob.currency == "USD"
    assert {s.provider for s in config.budget_sources(glob)} == {
        "aws_cost_explorer",
        "gcp_billing_export",
        "openai",
        "anthropic",
        "hunter",
    }
