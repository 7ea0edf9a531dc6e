"""Where the repository is, for tests that read its files (examples, docs, rules, chart)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
