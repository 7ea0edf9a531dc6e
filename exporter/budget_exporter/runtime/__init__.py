"""The runtime layer (see docs/development.md)."""
