from __future__ import annotations

import ast
import gzip
import re
from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.core.model import Period, Sample, SpendLine
from budget_exporter.exposition import families
from budget_exporter.exposition.families import cap_lines, label_name


def samples(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def line(amount: str, currency: str = "USD", **dims: str) -> SpendLine:
    return SpendLine.of(Period.MONTHLY, Decimal(amount), currency, dims)


def test_cap_keeps_largest_and_sums_the_rest_per_currency() -> None:
    lines = [line(str(i), service_name=f"s{i}") for i in range(1, 11)] + [
        line("5", "EUR", service_name="e")
    ]
    capped = cap_lines(lines, 4)
    usd = [ln for ln in capped if ln.currency == "USD"]
    assert [ln.dims["service_name"] for ln in usd] == ["s10", "s9", "s8", "other"]
    assert usd[-1].amount == sum(range(1, 8))
    assert sum(ln.amount for ln in usd) == sum(range(1, 11))
    assert [ln for ln in capped if ln.currency == "EUR"] == [lines[-1]]
    assert cap_lines(lines[:3], 3) == lines[:3]


def test_label_names_are_sanitised() -> None:
    assert label_name("tag_cost-center") == "tag_cost_center"
    assert label_name("9lives") == "_9lives"
    assert label_name("currency") == "dim_currency"
    assert label_name("service_name") == "service_name"


def test_rendered_exposition_follows_the_contract(make_engine) -> None:
    engine = make_engine(
        """
        global: {max_series_per_source: 2}
        sources:
          - name: llm
            provider: static
            currency: USD
            lines:
              - {amount: 5, dimensions: {model: gpt-4o, sub_account_id: proj_1}}
              - {amount: 2, dimensions: {model: gpt-4o-mini, sub_account_id: proj_1}}
              - {amount: 1, dimensions: {model: o3, sub_account_id: proj_2}}
          - {name: cloud, provider: static, currency: USD, lines: [{amount: 10, dimensions: {service_name: EC2}}]}
        budgets:
          - {name: total, limit: 40, currency: USD, labels: {team: finops}}
          - {name: llm, limit: 10, currency: USD, sources: [llm], stop_ratio: 0.9}
        """
    )
    assert engine.poll_all_once()
    text = engine.snapshot.rendered.text
    assert gzip.decompress(engine.snapshot.rendered.gzipped) == text
    got = samples(text)
    spend = {s[0]["budget"]: (s[0], s[1]) for s in got["budget_spend_amount"]}
    assert spend["total"] == (
        {"budget": "total", "currency": "USD", "period": "monthly", "team": "finops"},
        18.0,
    )
    assert spend["llm"][0]["team"] == ""  # absent label, same label names for the family
    stop = {s[0]["budget"]: s[1] for s in got["budget_stop_threshold_ratio"]}
    assert stop == {"total": 0.95, "llm": 0.9}
    assert {s[0]["budget"]: s[1] for s in got["budget_usage_ratio"]} == {"total": 0.45, "llm": 0.8}
    cost = sorted(
        (s[0]["source"], s[0]["model"], s[0]["service_name"], s[1])
        for s in got["budget_source_cost_amount"]
    )
    assert cost == [
        ("cloud", "", "EC2", 10.0),
        ("llm", "gpt-4o", "", 5.0),
        ("llm", "other", "", 3.0),
    ]
    other = next(s[0] for s in got["budget_source_cost_amount"] if s[0]["model"] == "other")
    assert other["sub_account_id"] == "other"
    up = {s[0]["source"]: s[1] for s in got["budget_source_up"]}
    assert up == {"llm": 1.0, "cloud": 1.0}
    assert got["budget_exporter_build_info"][0][1] == 1.0
    assert got["budget_exporter_config_last_reload_successful"][0][1] == 1.0
    statuses = {s[0]["status"] for s in got["budget_source_api_requests_total"]}
    assert statuses == {"ok", "client_error", "server_error", "throttled", "timeout", "network"}
    for name in ("budget_period_start_timestamp_seconds", "budget_period_end_timestamp_seconds"):
        assert len(got[name]) == 2
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text.decode())}
    for name in ("budget_spend_amount", "budget_forecast_amount", "budget_usage_ratio",
                 "budget_limit_amount", "budget_source_cost_amount"):  # fmt: skip
        assert "Cached from the last successful poll" in helps[name], name


def test_no_budget_series_before_first_data(make_engine) -> None:
    engine = make_engine(
        """
        sources: [{name: a, provider: static, amount: 1, currency: USD}]
        budgets: [{name: b, limit: 10, currency: USD}]
        """
    )
    got = samples(engine.snapshot.rendered.text)
    assert "budget_spend_amount" not in got
    assert "budget_source_up" not in got  # not attempted yet
    assert got["budget_source_poll_interval_seconds"][0][1] == 3600.0
    assert engine.pending_sources() == ["a"]


def test_provider_samples_are_rendered_with_source_labels(make_engine) -> None:
    engine = make_engine("sources: [{name: a, provider: static, amount: 1, currency: USD}]")
    from budget_exporter.core.model import PollResult

    runner = engine.runners["a"]
    original = runner.provider.poll

    def with_samples(windows):
        result = original(windows)
        return PollResult(
            lines=result.lines,
            samples=(
                Sample.of("budget_source_quota_used", "Quota used.", 320, {"quota": "searches"}),
                Sample.of(
                    "budget_source_quota_used", "Quota used.", 140, {"quota": "verifications"}
                ),
            ),
        )

    runner.provider.poll = with_samples  # type: ignore[method-assign]
    runner.poll()
    got = samples(engine.snapshot.rendered.text)
    assert sorted(
        (s[0]["quota"], s[0]["source"], s[0]["provider"], s[1])
        for s in got["budget_source_quota_used"]
    ) == [
        ("searches", "a", "static", 320.0),
        ("verifications", "a", "static", 140.0),
    ]


def test_provider_dimensions_never_clash_with_target_labels() -> None:
    assert label_name("job") == "exported_job"
    assert label_name("instance") == "exported_instance"


def test_the_module_docstring_lists_every_family_it_builds() -> None:
    """The docstring of ``exposition/families.py`` is the metrics contract at a glance: it
    names each family the module builds (counters with ``_total``), and nothing else."""

    tree = ast.parse(Path(families.__file__).read_text())
    built: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        first, called = node.args[0], ast.unparse(node.func)
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        if called in ("GaugeMetricFamily", "family"):
            built.add(first.value)
        elif called == "CounterMetricFamily":
            built.add(first.value + "_total")
    listed = set(re.findall(r"\b(budget_[a-z_]+)", ast.get_docstring(tree) or ""))
    assert len(built) > 25  # the walk found the families
    assert listed == built
