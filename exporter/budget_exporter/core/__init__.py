"""The core layer (see docs/development.md)."""
