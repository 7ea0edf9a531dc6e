"""The web layer (see docs/development.md)."""
