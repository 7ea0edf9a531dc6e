"""Secrets with a line break: a trailing one is dropped, any other is a config error.

requests refuses a header value with CR or LF in it and quotes the value's repr() in
its error, with the break escaped (``'Bearer sk-...\\n'``), so the literal secret the
redactor knew was not found and the key reached logs, ``last_error`` and pages.
"""

from __future__ import annotations

import json

import pytest
import requests
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.redaction import MASK, Redactor
from tests.support.llm import MONTH, make_provider

SECRET = "sk-admin-SECRETVALUE"
BASE = "https://api.openai.example/v1"

OPENAI = f"""
sources:
  - name: o
    provider: openai
    base_url: {BASE}
    admin_key: ${{OAI}}
budgets: [{{name: b, limit: 10, currency: USD}}]
"""

PROMETHEUS = """
sources:
  - name: p
    provider: prometheus
    url: http://127.0.0.1:9
    query: sum(x[{range}])
    currency: USD
    %s
budgets: [{name: b, limit: 10, currency: USD}]
"""


@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["lf", "crlf"])
@responses.activate
def test_a_trailing_line_break_in_a_variable_is_dropped(write_config, ending: str) -> None:
    config = load_config(write_config(OPENAI), env={"OAI": SECRET + ending})
    source = config.sources[0]
    assert source.admin_key == SECRET
    assert SECRET in config.secrets

    # The key is sent as it was meant, instead of failing every poll.
    responses.add(
        responses.GET,
        f"{BASE}/organization/costs",
        json={"object": "page", "data": [], "has_more": False, "next_page": None},
    )
    provider = make_provider("openai", admin_key=source.admin_key, base_url=BASE)
    provider.poll([MONTH])
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"


def test_a_trailing_line_break_in_a_secret_file_is_dropped(write_config, tmp_path) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")  # as `echo` and Kubernetes Secrets write it
    config = load_config(write_config(PROMETHEUS % "bearer_token_file: token"))
    assert config.sources[0].bearer_token == SECRET


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        (OPENAI, {"OAI": f"{SECRET}\nX-Other: 1"}, "sources[0].admin_key"),
        (OPENAI, {"OAI": f"{SECRET}\n\n"}, "sources[0].admin_key"),
        (PROMETHEUS % "bearer_token: ${TOK}", {"TOK": f"{SECRET}\r"}, "sources[0].bearer_token"),
        (
            PROMETHEUS % 'headers: {"X-Api-Key": "${TOK}"}',
            {"TOK": f"{SECRET}\r\nX-Other: 1"},
            "sources[0].headers.X-Api-Key",
        ),
        (
            PROMETHEUS % ('headers: {"X-Api-Key": "' + SECRET + '\\r\\nX-Other: 1"}'),
            {},
            "sources[0].headers.X-Api-Key",
        ),
    ],
    ids=[
        "openai-lf",
        "openai-two-lf",
        "prometheus-cr",
        "prometheus-header-env",
        "prometheus-header",
    ],
)
def test_a_line_break_inside_a_secret_is_a_one_line_error(
    write_config, text: str, env: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text), env=env)
    message = str(info.value)
    assert f"{field}: contains a line break" in message
    assert "SECRETVALUE" not in message
    assert "\n" not in message


def test_a_line_break_inside_a_secret_file_is_an_error(write_config, tmp_path) -> None:
    (tmp_path / "headers.yml").write_text(f'X-Api-Key: "{SECRET}\\nX-Other: 1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(write_config(PROMETHEUS % "headers_file: headers.yml"))
    assert "sources[0].headers.X-Api-Key: contains a line break" in str(info.value)
    assert "SECRETVALUE" not in str(info.value)


def test_a_request_body_may_span_lines(write_config) -> None:
    text = """
    sources:
      - name: api
        provider: http_json
        url: https://usage.example.com/v1/cost
        method: POST
        body: "{\\n  \\"key\\": \\"${KEY}\\"\\n}"
        amount: total
        currency: USD
    """
    config = load_config(write_config(text), env={"KEY": "k3y-value"})
    assert "\n" in str(config.sources[0].body)


@pytest.mark.parametrize("secret", [SECRET + "\n", f"{SECRET}\r\nX: 1"], ids=["lf", "crlf"])
def test_escaped_forms_of_a_secret_are_masked(secret: str) -> None:
    """Defence in depth: requests' own message, quoting the escaped value, is scrubbed."""
    redact = Redactor()
    redact.replace_secrets({secret})
    request = requests.Request("GET", BASE, headers={"Authorization": f"Bearer {secret}"})
    with pytest.raises(requests.exceptions.InvalidHeader) as info:
        request.prepare()
    assert "SECRETVALUE" in str(info.value)  # what reached logs and pages before
    out = redact(str(info.value))
    assert "SECRETVALUE" not in out and MASK in out


def test_repr_and_json_forms_of_a_secret_are_masked() -> None:
    secret = f"{SECRET}\t\u00e9\n"
    redact = Redactor()
    redact.add(secret)
    for written in (repr(secret), json.dumps(secret), secret.encode("unicode_escape").decode()):
        assert "SECRETVALUE" not in redact(f"failed: {written}"), written
