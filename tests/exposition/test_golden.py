"""The metrics contract on file: the demo configuration's exposition equals ``fixtures/demo.prom``.

A renamed metric or label, a changed help text or type, a series more or less: each fails this
test with a diff, until the golden file is regenerated on purpose (``.venv/bin/python -m
tests.support.golden``) and the change shows in review.
"""

from __future__ import annotations

from tests.support.golden import GOLDEN, demo_exposition, golden_diff


def test_demo_exposition_matches_the_golden_file() -> None:
    diff = golden_diff(GOLDEN.read_text(), demo_exposition())
    assert not diff, "the exposition changed; regenerate the golden file if intended:\n" + diff


def test_the_golden_file_catches_a_renamed_label() -> None:
    """The check is not vacuous: one label renamed on one family is a difference, and the
    diff names the line."""
    served = demo_exposition()
    renamed = served.replace('budget_source_up{provider="demo",', 'budget_source_up{vendor="demo",')
    assert renamed != served
    diff = golden_diff(GOLDEN.read_text(), renamed)
    assert '-budget_source_up{provider="demo",source="openai"} 1.0' in diff
    assert '+budget_source_up{vendor="demo",source="openai"} 1.0' in diff


def test_the_golden_file_covers_every_budget_and_source() -> None:
    golden = GOLDEN.read_text()
    for budget in ("global", "openai", "dataaxle", "hunter"):
        assert f'budget_spend_amount{{budget="{budget}",' in golden
    for source in ("openai", "dataaxle", "hunter", "aws"):
        assert f'budget_source_up{{provider="demo",source="{source}"}} 1.0' in golden
    assert "<volatile>" in golden  # poll durations are kept by labels only
