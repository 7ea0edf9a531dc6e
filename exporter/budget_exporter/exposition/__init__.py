"""The exposition layer (see docs/development.md)."""
