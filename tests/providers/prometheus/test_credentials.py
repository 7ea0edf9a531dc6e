"""The ``prometheus`` provider re-reads its credential files at every poll (rotating tokens).

Kubernetes rotates projected service-account tokens in place; Prometheus itself re-reads
``bearer_token_file`` per request. The exporter reads ``password_file``,
``bearer_token_file`` and ``headers_file`` again at each poll, so a rotated credential is
used without a reload, and a file that goes away fails the poll cleanly.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.redaction import MASK, redactor
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, make_provider

URL = "https://mimir.test/prometheus"
QUERY_URL = f"{URL}/api/v1/query"
EMPTY = load_fixture("prometheus", "empty_vector")


def load_source(tmp_path: Path, auth: str) -> Any:
    """A provider built from a loaded configuration whose credentials come from files."""
    file = tmp_path / "config.yml"
    file.write_text(
        "sources:\n"
        + textwrap.indent(
            textwrap.dedent(
                f"""\
                - name: mimir
                  provider: prometheus
                  url: {URL}
                  tenant: team-a
                  currency: USD
                  query: sum(increase(x_total[{{range}}]))
                """
            )
            + textwrap.indent(textwrap.dedent(auth), "  "),
            "  ",
        )
        + "budgets:\n  - {name: b, limit: 10, currency: USD}\n"
    )
    [source] = load_config(file).sources
    fields = source.model_dump(exclude={"name", "provider"}, exclude_none=True)
    return make_provider("prometheus", **fields)


def last_headers() -> Any:
    return responses.calls[-1].request.headers


@responses.activate
def test_a_rotated_bearer_token_is_used_at_the_next_poll(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token-one\n")
    provider = load_source(tmp_path, "bearer_token_file: token\n")
    responses.get(QUERY_URL, json=EMPTY)
    provider.poll([MONTH])
    assert last_headers()["Authorization"] == "Bearer sa-token-one"
    assert last_headers()["X-Scope-OrgID"] == "team-a"

    token.write_text("sa-token-two\n")  # the kubelet rotates the projected token
    provider.poll([MONTH])
    assert last_headers()["Authorization"] == "Bearer sa-token-two"
    queries = [c for c in responses.calls if "/api/v1/query" in c.request.url]
    assert len(queries) == 2  # (the server's retention, asked once, is the other call)
    # The new token is a secret as much as the first: scrubbed from logs and errors.
    assert redactor("refused sa-token-two") == f"refused {MASK}"


@responses.activate
def test_rotated_basic_auth_password_and_headers(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("first-pass\n")
    (tmp_path / "headers.yml").write_text("X-Api-Key: key-one\n")
    provider = load_source(
        tmp_path, "username: budget\npassword_file: password\nheaders_file: headers.yml\n"
    )
    responses.get(QUERY_URL, json=EMPTY)
    provider.poll([MONTH])
    basic = "Basic " + base64.b64encode(b"budget:first-pass").decode()
    assert last_headers()["Authorization"] == basic
    assert last_headers()["X-Api-Key"] == "key-one"

    (tmp_path / "password").write_text("second-pass\n")
    (tmp_path / "headers.yml").write_text("X-Api-Key: key-two\n")
    provider.poll([MONTH])
    basic = "Basic " + base64.b64encode(b"budget:second-pass").decode()
    assert last_headers()["Authorization"] == basic
    assert last_headers()["X-Api-Key"] == "key-two"


@responses.activate
def test_a_credential_file_that_goes_away_fails_the_poll_cleanly(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("sa-token-one\n")
    provider = load_source(tmp_path, "bearer_token_file: token\n")
    responses.get(QUERY_URL, json=EMPTY)

    token.unlink()
    with pytest.raises(SourceError) as caught:
        provider.poll([MONTH])
    message = str(caught.value)
    assert message == f"bearer_token_file: cannot read {token}: No such file or directory"
    assert not responses.calls  # nothing sent without the credential

    token.mkdir()  # unreadable as a file
    with pytest.raises(SourceError, match=r"bearer_token_file: cannot read .*: Is a directory"):
        provider.poll([MONTH])
    token.rmdir()

    token.write_text("\n")
    with pytest.raises(SourceError, match=r"^bearer_token_file: .*token is empty$"):
        provider.poll([MONTH])

    token.write_text("sa-token-three\n")  # back: the source recovers by itself
    provider.poll([MONTH])
    assert last_headers()["Authorization"] == "Bearer sa-token-three"


def test_a_headers_file_that_stops_being_a_mapping_fails_the_poll(tmp_path: Path) -> None:
    (tmp_path / "headers.yml").write_text("X-Api-Key: key-one\n")
    provider = load_source(tmp_path, "headers_file: headers.yml\n")
    (tmp_path / "headers.yml").write_text("- key-two\n")
    with pytest.raises(SourceError) as caught:
        provider.poll([MONTH])
    assert str(caught.value) == f"headers_file: {tmp_path / 'headers.yml'} is not a YAML mapping"
    assert "key-two" not in str(caught.value)


def test_a_missing_credential_file_is_still_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_source(tmp_path, "bearer_token_file: absent-token\n")
    assert "sources[0].bearer_token_file" in str(caught.value)
    assert "cannot read absent-token" in str(caught.value)
