"""Read the YAML configuration, expand it and build a :class:`Config`; every problem
becomes one :class:`ConfigError` line naming the file and the field, never the value.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from budget_exporter.config.checks import check_config
from budget_exporter.config.schema import BudgetConfig, Config, GlobalConfig
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.secretfiles import SecretFileError, read_secret_file, secrets_of
from budget_exporter.providers import (
    BrokenProviderError,
    UnknownProviderError,
    builtin_names,
    get_provider,
)
from budget_exporter.providers.base import SourceConfig


class _StrictYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader (libyaml's parser when available) that refuses duplicate keys,
    which plain YAML silently resolves to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" merges; explicit keys may override it
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping cannot be a key", key_node.start_mark
                ) from None
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictYamlLoader.construct_mapping
)
_ENV = re.compile(r"\$(\$)?\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SENSITIVE = re.compile(r"(?i)auth|key|token|secret|password|passwd|credential|cookie|signature")


@contextlib.contextmanager
def collector_paused() -> Iterator[bool]:
    """Python's cyclic garbage collector off for the block (back as it was after it); the
    block gets whether it was on.

    Reading a large configuration (or a saved state) builds hundreds of thousands of
    objects that all stay alive; every few hundred of them the collector would scan the
    young ones, and every so often all of them, for nothing: with 5,000 sources that was
    more than half of the parse.  Reference counting still frees everything else.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield was_enabled
    finally:
        if was_enabled:
            gc.enable()


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate ``path``; raise :class:`ConfigError` on any problem."""
    with collector_paused():
        return _load_config(str(path), env)


def _load_config(file: str, env: Mapping[str, str] | None) -> Config:
    env = os.environ if env is None else env
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read file: {_os_reason(exc)}") from None
    loader = _StrictYamlLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(file, "", _yaml_reason(exc)) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(file, "", f"invalid YAML: {type(exc).__name__}") from None
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError(file, "", "file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "must be a mapping with global, sources and budgets")
    try:
        return _ConfigBuilder(file, env, Path(file).parent).build(raw)
    except ConfigError as exc:
        if exc.file != file or not exc.path:
            raise
        raise ConfigError(file, exc.path, exc.message + _where(exc.path, raw, node)) from None


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _where(path: str, raw: dict[str, Any], node: yaml.Node) -> str:
    """ " (source 'openai', line 12)": the entry's name and the line the YAML loader
    saw the path at (the deepest part of it that is in the file), for an error."""
    parts: list[str | int] = [
        int(index) if index else key for key, index in _PATH_PART.findall(path)
    ]
    said = []
    if len(parts) >= 2 and parts[0] in ("sources", "budgets") and isinstance(parts[1], int):
        entries = raw.get(str(parts[0]))
        entry = entries[parts[1]] if isinstance(entries, list) and parts[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            said.append(f"{str(parts[0])[:-1]} {name!r}")
    line = _line_of(node, parts)
    if line is not None:
        said.append(f"line {line}")
    return f" ({', '.join(said)})" if said else ""


def _line_of(node: yaml.Node, parts: list[str | int]) -> int | None:
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


class _ConfigBuilder:
    """Turns the parsed YAML into a :class:`Config`: expands variables and ``*_file``
    fields, validates every part and collects the secrets."""

    def __init__(self, file: str, env: Mapping[str, str], base: Path) -> None:
        self.file = file
        self.env = env
        self.base = base
        self.secrets: set[str] = set()

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.file, path, message)

    def build(self, raw: dict[str, Any]) -> Config:
        unknown = sorted(set(map(str, raw)) - {"global", "sources", "budgets"})
        if unknown:
            raise self.error(
                unknown[0], _unknown_field(unknown[0], ["global", "sources", "budgets"])
            )
        global_ = self.validate(
            GlobalConfig, self.expand(raw.get("global") or {}, "global", False), "global"
        )
        sources = self.load_sources(raw.get("sources"))
        budgets = self.load_budgets(raw.get("budgets"))
        config = Config(self.file, global_, sources, budgets, frozenset(self.secrets))
        check_config(config)
        return config

    # -- sources -----------------------------------------------------------------

    def load_sources(self, raw: Any) -> tuple[SourceConfig, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.error("sources", "must be a non-empty list of sources")
        sources: list[SourceConfig] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            path = f"sources[{index}]"
            source = self.load_source(item, path)
            if source.name in seen:
                raise self.error(f"{path}.name", f"duplicate source name {source.name!r}")
            seen.add(source.name)
            sources.append(source)
        return tuple(sources)

    def load_source(self, item: Any, path: str) -> SourceConfig:
        if not isinstance(item, dict):
            raise self.error(path, "must be a mapping")
        name = item.get("provider")
        if name is None:
            raise self.error(f"{path}.provider", "field required")
        if not isinstance(name, str):
            raise self.error(f"{path}.provider", "must be a string")
        try:
            provider = get_provider(name)
        except UnknownProviderError:
            known = ", ".join(builtin_names())
            raise self.error(
                f"{path}.provider", f"unknown provider {name!r} (known: {known})"
            ) from None
        except BrokenProviderError as exc:
            raise self.error(f"{path}.provider", str(exc)) from None
        except ImportError as exc:
            raise self.error(
                f"{path}.provider",
                f"provider {name!r} needs a missing package ({exc.name}); install the "
                "extra its docs page names, e.g. pip install 'budget-exporter[gcp]'",
            ) from None
        model = provider.config_model
        item = self.resolve_files(dict(item), model, path)
        data: dict[str, Any] = {}
        for key, value in item.items():
            secret = key in model.secret_fields
            data[key] = self.expand(value, f"{path}.{key}", secret)
            if secret:
                self.secrets.update(_secrets_in(key, data[key]))
                if key not in model.multiline_fields:
                    self.check_single_line(data[key], f"{path}.{key}")
        return self.validate(model, data, path)

    def check_single_line(self, value: Any, path: str) -> None:
        """A credential or header value with CR or LF in it: requests would refuse it
        at every poll, quoting it; say so once, at load, without the value."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_single_line(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check_single_line(item, f"{path}[{index}]")
        elif isinstance(value, str) and ("\n" in value or "\r" in value):
            raise self.error(path, "contains a line break (CR or LF); a secret must be one line")

    def resolve_files(
        self, item: dict[str, Any], model: type[SourceConfig], path: str
    ) -> dict[str, Any]:
        """Replace each ``<secret>_file`` key with the file's content under ``<secret>``
        (keeping the path too where the model has a ``<secret>_file`` field)."""
        for secret in sorted(model.secret_fields):
            key = f"{secret}_file"
            if key not in item:
                continue
            where = f"{path}.{key}"
            if secret in item:
                raise self.error(where, f"set either {secret} or {key}, not both")
            target = self.expand(item.pop(key), where, False)
            if not isinstance(target, str):
                raise self.error(where, "must be a file path")
            file = Path(target) if Path(target).is_absolute() else self.base / target
            try:
                value = read_secret_file(file, _is_mapping_field(model, secret), shown=target)
            except SecretFileError as exc:
                raise self.error(where, str(exc)) from None
            self.secrets.update(secrets_of(value))
            item[secret] = value
            if key in model.model_fields:
                # The provider reads the file again per poll (rotating tokens); the path
                # is kept absolute, and escaped from a second ${VAR} expansion.
                item[key] = str(file.absolute()).replace("${", "$${")
        return item

    # -- budgets -----------------------------------------------------------------

    def load_budgets(self, raw: Any) -> tuple[BudgetConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.error("budgets", "must be a list of budgets")
        budgets: list[BudgetConfig] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            path = f"budgets[{index}]"
            if not isinstance(item, dict):
                raise self.error(path, "must be a mapping")
            budget = self.validate(BudgetConfig, self.expand(item, path, False), path)
            if budget.name in seen:
                raise self.error(f"{path}.name", f"duplicate budget name {budget.name!r}")
            seen.add(budget.name)
            budgets.append(budget)
        return tuple(budgets)

    # -- helpers -----------------------------------------------------------------

    def expand(self, value: Any, path: str, secret: bool) -> Any:
        """Expand ``${VAR}`` in every string below ``value`` (``$${`` is a literal ``${``)."""
        if isinstance(value, str):
            return self.expand_string(value, path, secret)
        if isinstance(value, list):
            return [self.expand(v, f"{path}[{i}]", secret) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, f"{path}.{k}", secret) for k, v in value.items()}
        return value

    def expand_string(self, text: str, path: str, secret: bool) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(1):
                return "${" + match.group(2) + "}"
            name = match.group(2)
            if not _ENV_NAME.match(name):
                raise self.error(path, f"invalid environment variable reference ${{{name}}}")
            if name not in self.env:
                raise self.error(path, f"environment variable {name} is not set")
            value = self.env[name]
            if secret:
                # `export KEY=$(...)` drops it, but $'...\n' or a .env editor may not.
                value = _without_line_end(value)
                self.secrets.add(value)
            return value

        return _ENV.sub(substitute, text)

    def validate(self, model: type[BaseModel], data: Any, path: str) -> Any:
        try:
            # Validators may resolve relative paths against the config file's folder.
            return model.model_validate(data, context={"config_dir": str(self.base)})
        except ValidationError as exc:
            where, message = _first_error(exc, model, path)
            if message.startswith("must be a URL"):
                message += _shown_url(data, where.removeprefix(path), model)
            raise self.error(where, message) from None


def _shown_url(data: Any, path: str, model: type[BaseModel]) -> str:
    """`` (got 'api.openai.com/v1')`` for a malformed URL at ``path`` below ``data``, without
    its query or user info; nothing for a secret field."""
    value = data
    for key, index in _PATH_PART.findall(path):
        if index:
            value = value[int(index)] if isinstance(value, list) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
        if key in getattr(model, "secret_fields", ()):
            return ""
    if not isinstance(value, str):
        return ""
    shown, query, _ = value.partition("?")
    shown = shown.rpartition("@")[2]  # no user info: it may hold a password
    return f" (got {shown + ('?...' if query else '')!r})"


def _first_error(exc: ValidationError, model: type[BaseModel], base: str) -> tuple[str, str]:
    """Path and message of the first problem, without the offending input. An unknown key
    comes first: a misspelt required key is both unknown and missing, and its spelling is
    what the user has to fix."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    path = base
    for part in error["loc"]:
        path = (
            f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else str(part)
        )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = _unknown_field(str(error["loc"][-1]), _field_names(model, error["loc"]))
    elif error["type"] == "missing":
        message = "field required"
    elif error["type"] in _YAML_TERMS:
        message = _YAML_TERMS[error["type"]]
    elif error["type"] == "string_pattern_mismatch" and "http" in error["msg"]:
        message = "must be a URL starting with http:// or https://"
    return path, message


_YAML_TERMS = {
    "tuple_type": "must be a list: [a, b], or one item a line starting with -",
    "list_type": "must be a list: [a, b], or one item a line starting with -",
    "set_type": "must be a list: [a, b], or one item a line starting with -",
    "dict_type": "must be a mapping: {key: value}, or one key: value a line",
    "model_type": "must be a mapping: {key: value}, or one key: value a line",
    "model_attributes_type": "must be a mapping: {key: value}, or one key: value a line",
}
"""Validation errors said in the words of the YAML the user wrote."""


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that owns the unknown key, for suggestions."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        secrets = getattr(current, "secret_fields", ())
        return [*current.model_fields, *(f"{name}_file" for name in secrets)]
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _unknown_field(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}"


def _is_mapping_field(model: type[BaseModel], name: str) -> bool:
    info = model.model_fields.get(name)
    if info is None:
        return False
    annotation = info.annotation
    options = get_args(annotation) if get_origin(annotation) is not dict else (annotation,)
    return any(get_origin(a) is dict or a is dict for a in (annotation, *options))


def _without_line_end(value: str) -> str:
    """``value`` without one trailing LF or CRLF."""
    return value.removesuffix("\n").removesuffix("\r") if value.endswith("\n") else value


def _secrets_in(key: str, value: Any) -> set[str]:
    """Values inside a secret field worth scrubbing from logs and errors."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and _SENSITIVE.search(str(k)):
                found.add(v)
                found.update(v.split()[1:])  # "Bearer abc" -> also "abc"
            found.update(_secrets_in(str(k), v) if not isinstance(v, str) else _url_secrets(v))
    elif isinstance(value, list):
        for item in value:
            found.update(_secrets_in(key, item))
    elif isinstance(value, str):
        if _SENSITIVE.search(key):
            found.add(value)
        found.update(_url_secrets(value))
    return found


def _url_secrets(text: str) -> set[str]:
    if "://" not in text:
        return set()
    parts = urlsplit(text)
    found = {v for _, v in parse_qsl(parts.query)}
    if parts.password:
        found.add(parts.password)
    return found


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    if mark is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {problem}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8 text"
