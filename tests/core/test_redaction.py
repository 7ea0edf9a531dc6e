from __future__ import annotations

from budget_exporter.core.redaction import MASK, Redactor, redact_urls


def test_url_query_values_and_userinfo_are_masked() -> None:
    text = "GET https://user:pw@api.hunter.io/v2/account?api_key=abc123&x=1 failed"
    out = redact_urls(text)
    assert "abc123" not in out and "pw" not in out
    assert f"GET https://{MASK}@api.hunter.io/v2/account?api_key={MASK}&x={MASK} failed" == out


def test_registered_secrets_are_masked_longest_first() -> None:
    redact = Redactor()
    redact.replace_secrets({"sk-abcdef", "sk-abcdef-long", "ab"})  # too short ones are ignored
    assert redact("key sk-abcdef-long and sk-abcdef, ab") == f"key {MASK} and {MASK}, ab"
    redact.replace_secrets(set())
    assert redact("sk-abcdef") == "sk-abcdef"


def test_a_bare_paths_query_values_are_masked() -> None:
    """urllib3 names only the path in "Max retries exceeded with url: /v2/account?api_key=...":
    no scheme, no host, the key all the same."""
    text = "Max retries exceeded with url: /v2/account?api_key=abc123&limit=5 (Caused by ...)"
    out = redact_urls(text)
    assert "abc123" not in out
    assert (
        out
        == f"Max retries exceeded with url: /v2/account?api_key={MASK}&limit={MASK} (Caused by ...)"
    )
    # A path without a query, or a word with a slash inside, is left as it is.
    assert redact_urls("GET /-/ready and a/b?c") == "GET /-/ready and a/b?c"
