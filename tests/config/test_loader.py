from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period
from tests.support.paths import ROOT

STATIC = "{name: a, provider: static, amount: 5, currency: USD}"


def test_demo_config_is_valid() -> None:
    config = load_config(ROOT / "examples" / "demo.yml")
    assert [b.name for b in config.budgets] == ["global", "openai", "dataaxle", "hunter"]
    assert config.budgets[0].limit == Decimal(3000)
    assert {s.provider for s in config.sources} == {"demo"}


def test_full_config_with_defaults_and_overrides(write_config) -> None:
    path = write_config(
        """
        global:
          poll_interval: 4h
          timeout: 1m30s
          warning_ratio: 0.7
          stop_ratio: 0.9
        sources:
          - name: invoices
            provider: static
            amount: 120.5
            currency: usd
            poll_interval: 1d
          - {name: b, provider: static, currency: EUR, lines: [{amount: "1.10", dimensions: {service_name: x}}]}
        budgets:
          - name: global
            limit: 3000
            currency: USD
          - name: eu
            limit: "99.99"
            currency: EUR
            period: quarterly
            sources: [b]
            match: {service_name: /x|y/}
            warning_ratio: 0.5
            labels: {team: finops}
        """
    )
    config = load_config(path)
    invoices, b = config.sources
    assert invoices.amount == Decimal("120.5")
    assert invoices.currency == "USD"
    assert config.poll_interval(invoices).total_seconds() == 86400
    assert config.poll_interval(b).total_seconds() == 4 * 3600
    assert config.timeout(b).total_seconds() == 90
    glob, eu = config.budgets
    assert config.budget_sources(glob) == [invoices, b]
    assert config.budget_sources(eu) == [b]
    assert (config.warning_ratio(glob), config.stop_ratio(glob)) == (0.7, 0.9)
    assert (config.warning_ratio(eu), config.stop_ratio(eu)) == (0.5, 0.9)
    assert eu.limit == Decimal("99.99")
    assert config.periods(b) == {Period.MONTHLY, Period.QUARTERLY}


def test_env_expansion_and_escape(write_config) -> None:
    path = write_config(
        """
        sources:
          - name: api
            provider: http_json
            url: "https://usage.example.com/v1/cost?key=${USAGE_KEY}&literal=$${NOT_EXPANDED}"
            headers: {Authorization: "Bearer ${TOKEN}"}
            amount: data.total
            currency: USD
        """
    )
    config = load_config(path, env={"USAGE_KEY": "k3y-value", "TOKEN": "t0ken-value"})
    source = config.sources[0]
    assert source.url == "https://usage.example.com/v1/cost?key=k3y-value&literal=${NOT_EXPANDED}"
    assert source.headers == {"Authorization": "Bearer t0ken-value"}
    assert {"k3y-value", "t0ken-value"} <= config.secrets


def test_secret_file_twins(write_config, tmp_path: Path) -> None:
    (tmp_path / "headers.yml").write_text("Authorization: Bearer from-a-file\n")
    (tmp_path / "url.txt").write_text("https://usage.example.com/cost?api_key=filekey123\n")
    path = write_config(
        """
        sources:
          - name: api
            provider: http_json
            url_file: url.txt
            headers_file: headers.yml
            amount: total
            currency: USD
        """
    )
    config = load_config(path)
    source = config.sources[0]
    assert source.headers == {"Authorization": "Bearer from-a-file"}
    assert source.url == "https://usage.example.com/cost?api_key=filekey123"
    assert {"Bearer from-a-file", "filekey123"} <= config.secrets


BAD_CONFIGS = {
    "yaml syntax": ("sources: [ {name: a", "invalid YAML at line"),
    "unknown provider": (
        "sources: [{name: a, provider: nope}]",
        "sources[0].provider: unknown provider 'nope'",
    ),
    "negative limit": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: -1, currency: USD}}]",
        "budgets[0].limit: must be greater than zero",
    ),
    "tiny limit": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: '1e-999999', currency: USD}}]",
        "budgets[0].limit: must be at least 0.000001",
    ),
    "non-numeric limit": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: lots, currency: USD}}]",
        "budgets[0].limit: must be a number",
    ),
    "warning above stop": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, warning_ratio: 0.96}}]",
        "budgets[0].warning_ratio: warning ratio 0.96 must be below stop ratio 0.95",
    ),
    "global warning above stop": (
        f"global: {{warning_ratio: 0.9, stop_ratio: 0.8}}\nsources: [{STATIC}]",
        "global.warning_ratio: 0.9 must be below stop_ratio 0.8",
    ),
    "unknown source": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, sources: [a, zz]}}]",
        "budgets[0].sources[1]: unknown source 'zz'",
    ),
    "duplicate source": (
        f"sources: [{STATIC}, {STATIC}]",
        "sources[1].name: duplicate source name 'a'",
    ),
    "duplicate budget": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD}}, {{name: b, limit: 9, currency: USD}}]",
        "budgets[1].name: duplicate budget name 'b'",
    ),
    "missing env var": (
        "sources: [{name: a, provider: http_json, url: 'https://x/?k=${NOT_SET_ANYWHERE}', amount: a, currency: USD}]",
        "sources[0].url: environment variable NOT_SET_ANYWHERE is not set",
    ),
    "typo key": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limt: 9, currency: USD}}]",
        "budgets[0].limt: unknown field (did you mean 'limit'?)",
    ),
    "typo in source": (
        "sources: [{name: a, provider: static, amout: 5, currency: USD}]",
        "sources[0].amout: unknown field (did you mean 'amount'?)",
    ),
    "bad duration": (
        f"global: {{poll_interval: 5x}}\nsources: [{STATIC}]",
        "global.poll_interval: invalid duration: use a number and a unit",
    ),
    "huge duration": (
        f"global: {{poll_interval: 99999999999d}}\nsources: [{STATIC}]",
        "global.poll_interval: invalid duration: must be at most 400d",
    ),
    "long timeout": (
        "sources: [{name: a, provider: static, amount: 5, currency: USD, timeout: 2h}]",
        "sources[0].timeout: must be at most 1h",
    ),
    "zero duration": (
        f"global: {{timeout: 0s}}\nsources: [{STATIC}]",
        "global.timeout: invalid duration",
    ),
    "empty file": ("", "file is empty"),
    "not a mapping": ("- just\n- a list\n", "must be a mapping"),
    "no sources": ("budgets: []", "sources: must be a non-empty list"),
    "bad source name": (
        "sources: [{name: 'Bad Name', provider: static, amount: 1, currency: USD}]",
        "sources[0].name: String should match pattern",
    ),
    "bad currency": (
        "sources: [{name: a, provider: static, amount: 1, currency: dollars}]",
        "sources[0].currency: must be a three-letter ISO 4217 currency code",
    ),
    "duplicate key": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, limit: 10, currency: USD}}]",
        "invalid YAML at line 2, column 31: duplicate key 'limit'",
    ),
    "period not reported": (
        "sources: [{name: a, provider: http_json, url: 'https://x/', amount: a, currency: USD}]\n"
        "budgets: [{name: b, limit: 9, currency: USD, period: daily}]",
        "budgets[0].period: source 'a' (http_json) reports only monthly spend, not daily",
    ),
    "bad regex": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, match: {{model: '/(/'}}}}]",
        "budgets[0].match: invalid regular expression for 'model'",
    ),
    "reserved label": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, labels: {{budget: x}}}}]",
        "budgets[0].labels: 'budget' is set by the exporter",
    ),
    "reserved label source": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, labels: {{source: x}}}}]",
        "budgets[0].labels: 'source' is set by the exporter",
    ),
    "reserved label provider": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, labels: {{provider: x}}}}]",
        "budgets[0].labels: 'provider' is set by the exporter",
    ),
    "unknown top-level key": (
        f"sourcs: [{STATIC}]",
        "sourcs: unknown field (did you mean 'sources'?)",
    ),
    "both secret and file": (
        "sources: [{name: a, provider: http_json, url: 'https://x/', url_file: u.txt, amount: a, currency: USD}]",
        "sources[0].url_file: set either url or url_file, not both",
    ),
    "missing secret file": (
        "sources: [{name: a, provider: http_json, url_file: /nonexistent/u.txt, amount: a, currency: USD}]",
        "sources[0].url_file: cannot read /nonexistent/u.txt",
    ),
    "bad jmespath": (
        "sources: [{name: a, provider: http_json, url: 'https://x/', amount: 'a[', currency: USD}]",
        "sources[0].amount: invalid JMESPath expression",
    ),
    "limit and limit_from": (
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, limit_from: {{source: a, budget: x}}}}]",
        "budgets[0]: set exactly one of limit or limit_from",
    ),
}


@pytest.mark.parametrize("text, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_raises_one_line_error(write_config, text: str, expected: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("case", ["yaml syntax", "negative limit", "typo key", "missing env var"])
def test_cli_exits_nonzero_with_one_line_and_no_traceback(write_config, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    path = write_config(text)
    for flags in (["--config.check"], ["--once"], []):
        proc = subprocess.run(
            [sys.executable, "-m", "budget_exporter", f"--config.file={path}", *flags],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(path) in lines[0] and expected in lines[0]
        assert "Traceback" not in proc.stderr


def test_cli_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "budget_exporter",
            f"--config.file={tmp_path}/nope.yml",
            "--config.check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"budget-exporter: invalid configuration: {tmp_path}/nope.yml: file not found"
    )


def test_errors_never_echo_secret_values(write_config) -> None:
    # A secret in a field that fails validation must not be echoed back.
    path = write_config(
        """
        sources:
          - name: a
            provider: http_json
            url: "https://x/?key=${KEY}"
            headers: {Authorization: 12345678901234}
            amount: a
            currency: USD
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"KEY": "super-secret-key"})
    assert "12345678901234" not in str(info.value)
    assert "super-secret-key" not in str(info.value)
    assert "sources[0].headers.Authorization" in str(info.value)


@pytest.mark.parametrize(
    "field",
    ["budgets: [{name: b, currency: USD, limit: 'x${KEY}'}]", "global: {timeout: '${KEY}'}"],
)
def test_invalid_values_are_not_echoed(write_config, field: str) -> None:
    path = write_config(f"sources: [{STATIC}]\n{field}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"KEY": "s3cret-in-the-wrong-field"})
    assert "s3cret-in-the-wrong-field" not in str(info.value)
    assert "budgets[0].limit" in str(info.value) or "global.timeout" in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, labels: {{instance: x}}}}]",
            "budgets[0].labels: label 'instance' clashes with Prometheus target labels",
        ),
        (
            "sources: [{name: a, provider: static, currency: USD, lines: [{amount: 1, dimensions: {service: x}}]}]",
            "use 'service_name'",
        ),
        (
            "sources: [{name: a, provider: http_json, url: 'https://x/', lines: items, amount: a, "
            "currency: USD, dimensions: {region: r}}]",
            "use 'region_id'",
        ),
    ],
)
def test_labels_that_clash_with_target_labels_are_refused(
    write_config, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write_config(text))


@pytest.mark.extra("gcp")
def test_credential_file_paths_are_relative_to_the_config_file(
    write_config, tmp_path: Path
) -> None:
    path = write_config(
        """
        sources:
          - {name: gcp, provider: gcp_budgets, billing_account_id: 01A2B3-C4D5E6-F7A8B9,
             credentials_file: keys/sa.json}
        """
    )
    assert load_config(path).sources[0].credentials_file == str(tmp_path / "keys" / "sa.json")


def test_yaml_merge_keys_work_and_odd_keys_are_config_errors(write_config) -> None:
    path = write_config(
        """
        sources: [{name: a, provider: static, amount: 1, currency: USD}]
        budgets:
          - &first {name: b, currency: USD, limit: 10}
          - {<<: *first, name: c, limit: 20}
        """
    )
    assert [(b.name, b.limit) for b in load_config(path).budgets] == [("b", 10), ("c", 20)]
    path = write_config(
        """
        sources: [{name: a, provider: static, amount: 1, currency: USD}]
        ? [x, y]
        : 1
        """
    )
    with pytest.raises(ConfigError, match="a list or mapping cannot be a key"):
        load_config(path)
