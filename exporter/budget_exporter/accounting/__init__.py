"""The accounting layer (see docs/development.md)."""
