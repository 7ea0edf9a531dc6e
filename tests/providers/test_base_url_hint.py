"""A base_url without the API's path (``https://proxy`` for ``https://api.openai.com/v1``)
answers 404: the poll's error says which path is missing."""

from __future__ import annotations

from typing import Any

from budget_exporter.runtime.engine import Engine
from tests.support.fake_upstream import FakeUpstream, Reply


def poll_error(make_engine: Any, base_url: str) -> str | None:
    engine: Engine = make_engine(
        f"""
        sources:
          - {{name: openai, provider: openai, admin_key: sk-admin-x, base_url: "{base_url}"}}
        budgets:
          - {{name: b, limit: 10, currency: USD}}
        """
    )
    engine.runners["openai"].poll()
    return engine.states["openai"].last_error


def test_a_404_from_a_base_url_without_v1_names_the_missing_path(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    upstream.default = Reply(status=404, body=b"no such path")
    error = poll_error(make_engine, upstream.url)
    assert error is not None and "answered HTTP 404" in error
    assert error.endswith(
        f" (base_url {upstream.url} has no /v1 at its end, unlike the default "
        "https://api.openai.com/v1: a proxy or mirror keeps the API's path)"
    )


def test_no_hint_when_the_path_is_there(make_engine: Any, upstream: FakeUpstream) -> None:
    upstream.default = Reply(status=404, body=b"no such path")
    error = poll_error(make_engine, f"{upstream.url}/v1")
    assert error is not None and "answered HTTP 404" in error and "base_url" not in error


def test_no_hint_for_other_statuses(make_engine: Any, upstream: FakeUpstream) -> None:
    upstream.default = Reply(status=401, json={"error": {"message": "bad key"}})
    error = poll_error(make_engine, upstream.url)
    assert error is not None and "base_url" not in error
