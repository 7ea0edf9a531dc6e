"""A provider from another package, found through the ``budget_exporter.providers``
entry-point group: the example in docs/writing-a-provider.md, installed as a
distribution of its own, works as written."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter import providers
from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.runtime.engine import Engine
from tests.support.paths import ROOT

GUIDE = ROOT / "docs" / "writing-a-provider.md"


def guide_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)\n```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 1, f"one {language} block expected in the guide"
    return blocks[0]


@pytest.fixture
def tally_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The guide's provider module and entry point, on sys.path as an installed distribution."""
    site = tmp_path / "site"
    package = site / "tally_exporter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "provider.py").write_text(guide_block("python"))
    group = tomllib.loads(guide_block("toml"))["project"]["entry-points"][
        "budget_exporter.providers"
    ]
    lines = "".join(f"{name} = {target}\n" for name, target in group.items())
    dist = site / "tally_exporter-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tally-exporter\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[budget_exporter.providers]\n{lines}")
    monkeypatch.syspath_prepend(str(site))
    yield
    providers._REGISTRY.pop("tally", None)
    for name in [m for m in sys.modules if m.startswith("tally_exporter")]:
        del sys.modules[name]


@responses.activate
def test_entry_point_provider_is_found_configured_and_polled(
    tally_distribution: None, tmp_path: Path
) -> None:
    responses.get(
        "http://127.0.0.1:9/v1/spend",
        json={"total": "12.50", "currency": "USD"},
        match=[responses.matchers.header_matcher({"Authorization": "Bearer tk-secret"})],
    )
    config = tmp_path / "c.yml"
    config.write_text(
        "sources:\n"
        "  - {name: tally, provider: tally, api_key: tk-secret, base_url: 'http://127.0.0.1:9/v1'}\n"
        "budgets:\n"
        "  - {name: b, limit: 100, currency: USD, sources: [tally]}\n"
    )
    engine = Engine(load_config(config))
    engine.poll_all_once()
    text = engine.snapshot.rendered.text.decode()
    spend = {
        s.labels["budget"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "budget_spend_amount"
    }
    assert spend == {"b": 12.5}
    assert "tk-secret" not in text


def test_builtin_names_do_not_list_entry_points(tally_distribution: None) -> None:
    assert providers.get_provider("tally").name == "tally"
    assert "tally" not in providers.builtin_names()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "tally = tally_exporter.provider:TallyProvider",
            "loads a provider named 'tally': the entry point's name and the class's name",
        ),
        ("tally = tally_exporter.provider:nothing_here", "cannot be loaded: AttributeError"),
        ("tally = tally_exporter.provider:Sequence", "is not a Provider subclass"),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_it(
    tally_distribution: None, tmp_path: Path, entry: str, expected: str
) -> None:
    """The entry point is registered as ``counter`` (first case) or points at something that
    is not a provider class: configuration loading says so in one line, no traceback."""
    dist = next((tmp_path / "site").glob("*.dist-info"))
    name = "counter" if "TallyProvider" in entry else "tally"
    (dist / "entry_points.txt").write_text(
        f"[budget_exporter.providers]\n{entry.replace('tally =', f'{name} =', 1)}\n"
    )
    config = tmp_path / "c.yml"
    config.write_text(
        f"sources:\n  - {{name: s, provider: {name}}}\n"
        "budgets:\n  - {name: b, limit: 1, currency: USD}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"sources[0].provider: entry point {name} = tally_exporter.provider:" in message
    assert expected in message
    providers._REGISTRY.pop(name, None)
