"""The config layer (see docs/development.md)."""
