"""Exceptions with messages that are safe to show to users."""

from budget_exporter.core.messages import one_line


class ConfigError(Exception):
    """The configuration is invalid; ``str()`` is a single line naming file and field."""

    def __init__(self, file: str, path: str, message: str) -> None:
        message = one_line(message)
        self.file = file
        self.path = path
        self.message = message
        where = f"{file}: {path}: " if path else f"{file}: "
        super().__init__(where + message)


class SourceError(Exception):
    """A poll failed; the message must not contain secrets (it is redacted anyway)."""
