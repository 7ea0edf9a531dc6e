"""Load and validate the YAML configuration.

Everything wrong with a file ends as one :class:`ConfigError` line naming the
file, the path of the field (``budgets[2].limit``) and what is wrong, without
echoing the offending value (it may be a secret).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from budget_exporter.config.tuning import (
    AlertTuning,
    BudgetTuning,
    GlobalTuning,
    horizon_problem,
    resolve,
)
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.fields import Currency, Duration, Money, Ratio, Timeout
from budget_exporter.core.model import Period, label_clash
from budget_exporter.core.secretfiles import SecretFileError, read_secret_file, secrets_of
from budget_exporter.providers import UnknownProviderError, builtin_names, get_provider
from budget_exporter.providers.base import Provider, SourceConfig


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
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SMALLEST_LIMIT = Decimal("0.000001")
# Labels the exporter sets on budget series (budget_source_info adds source and provider).
_BUDGET_LABELS = frozenset({"budget", "currency", "period", "source", "provider"})
METERED_POLLS_BEFORE_STALE = 3
"""A metered source's figures are stale after this many of its poll intervals (plus its timeout)."""
MIN_BILLED_DATA_AGE = timedelta(hours=6)
_SENSITIVE = re.compile(r"(?i)auth|key|token|secret|password|passwd|credential|cookie|signature")


class CheckConfig(BaseModel):
    """``global.check``: the pre-operation check API (``POST /api/v1/check``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_data_age: Duration | None = None
    """How old a billed source's figures may be (a source's own ``max_data_age``
    overrides it); unset: twice the source's poll interval, at least 6h.  A metered
    source's allowance is never longer (see :meth:`Config.max_data_age`)."""
    on_stale: Literal["fail_open", "fail_closed"] = "fail_open"


class GlobalConfig(GlobalTuning):
    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval: Duration = timedelta(hours=1)
    timeout: Timeout = timedelta(seconds=30)
    warning_ratio: Ratio = 0.8
    stop_ratio: Ratio = 0.95
    retries: int = Field(default=3, ge=0, le=10)
    retry_backoff: Duration = timedelta(seconds=1)
    max_retry_after: Duration = timedelta(minutes=5)
    jitter_ratio: float = Field(default=0.1, ge=0, le=0.5)
    max_series_per_source: int = Field(default=200, ge=1)
    poll_workers: int = Field(default=8, ge=1, le=256)
    check: CheckConfig = CheckConfig()
    dashboard_url: str | None = Field(default=None, max_length=2000)
    """Link to the Grafana dashboards, shown on the landing page."""

    @field_validator("dashboard_url")
    @classmethod
    def _plain_web_link(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", value):
            raise ValueError("must be an http:// or https:// URL")
        if "@" in parts.netloc:
            raise ValueError("must not contain a user name or password: the page shows it")
        return value


class LimitFrom(BaseModel):
    """Take a budget's limit from a budget kept in the provider (AWS or GCP Budgets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    budget: str = Field(min_length=1)
    thresholds: bool = True
    """Use the provider budget's notification thresholds where the config sets none."""


class BudgetConfig(BudgetTuning):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    limit: Money | None = None
    limit_from: LimitFrom | None = None
    currency: Currency
    period: Period = Period.MONTHLY
    sources: tuple[str, ...] | None = None
    """Source names or ``"*"``; unset means all sources, or, with ``limit_from``,
    the provider budget's own actual and forecast spend."""
    match: dict[str, str] = Field(default_factory=dict)
    warning_ratio: Ratio | None = None
    stop_ratio: Ratio | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("limit")
    @classmethod
    def _positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than zero")
        if value is not None and value < _SMALLEST_LIMIT:
            raise ValueError(f"must be at least {_SMALLEST_LIMIT}")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # sources: "*"

    @field_validator("sources")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError('must name at least one source, or "*" for all')
        return value

    @model_validator(mode="after")
    def _limit_or_limit_from(self) -> BudgetConfig:
        if (self.limit is None) == (self.limit_from is None):
            raise ValueError("set exactly one of limit or limit_from")
        return self

    @property
    def spend_from_provider(self) -> bool:
        """Spend comes from the provider budget itself, not from source lines."""
        return self.limit_from is not None and self.sources is None

    @field_validator("match")
    @classmethod
    def _valid_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"invalid regular expression for {key!r}: {exc}") from None
        return value

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"{key!r} is not a valid Prometheus label name")
            if key in _BUDGET_LABELS:
                raise ValueError(f"{key!r} is set by the exporter and cannot be a static label")
            if label_clash(key):
                raise ValueError(label_clash(key))
        return value


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    file: str
    global_: GlobalConfig
    sources: tuple[SourceConfig, ...]
    budgets: tuple[BudgetConfig, ...]
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def provider_class(self, source: SourceConfig) -> type[Provider]:
        return get_provider(source.provider)

    def budget_sources(self, budget: BudgetConfig) -> list[SourceConfig]:
        """Sources whose spend lines the budget sums."""
        if budget.spend_from_provider:
            return []
        if budget.sources is None or "*" in budget.sources:
            return list(self.sources)
        order = self._source_order
        found = sorted({order[name] for name in budget.sources if name in order})
        return [self.sources[i] for i in found]  # in config order, each once

    def polled_sources(self, budget: BudgetConfig) -> list[SourceConfig]:
        """Sources the budget needs data from: its spend sources and its limit source."""
        found = self.budget_sources(budget)
        ref = budget.limit_from
        if ref is None or ref.source not in self._source_order:
            return found
        if all(s.name != ref.source for s in found):
            found.append(self.sources[self._source_order[ref.source]])
        return found

    def source_named(self, name: str) -> SourceConfig | None:
        """The source called ``name`` (looked up, not scanned)."""
        index = self._source_order.get(name)
        return None if index is None else self.sources[index]

    def source_budgets(self, source: str) -> tuple[BudgetConfig, ...]:
        """Budgets that sum ``source``'s spend lines, in config order (looked up, not scanned)."""
        return self._source_budgets.get(source, ())

    def limit_budgets(self, source: str) -> tuple[BudgetConfig, ...]:
        """Budgets that take their limit from ``source`` (``limit_from``)."""
        return self._limit_budgets.get(source, ())

    @cached_property
    def _source_order(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.sources)}

    @cached_property
    def _source_budgets(self) -> dict[str, tuple[BudgetConfig, ...]]:
        found: dict[str, list[BudgetConfig]] = {}
        for budget in self.budgets:
            for source in self.budget_sources(budget):
                found.setdefault(source.name, []).append(budget)
        return {name: tuple(budgets) for name, budgets in found.items()}

    @cached_property
    def _limit_budgets(self) -> dict[str, tuple[BudgetConfig, ...]]:
        found: dict[str, list[BudgetConfig]] = {}
        for budget in self.budgets:
            if budget.limit_from is not None:
                found.setdefault(budget.limit_from.source, []).append(budget)
        return {name: tuple(budgets) for name, budgets in found.items()}

    def poll_interval(self, source: SourceConfig) -> timedelta:
        """Source setting, else the provider's default, else the global one."""
        return (
            source.poll_interval
            or self.provider_class(source).default_poll_interval
            or self.global_.poll_interval
        )

    def timeout(self, source: SourceConfig) -> timedelta:
        return source.timeout or self.global_.timeout

    def max_data_age(self, source: SourceConfig) -> timedelta:
        """How old ``source``'s figures may be before a budget counting them is stale.

        The source's own ``max_data_age`` when set.  Otherwise, for a billed source,
        ``global.check.max_data_age``, or twice its poll interval and at least six
        hours (a bill polled every 8h is not stale between two polls).  A metered
        source (``prometheus``) is current to its last poll, and a meter that stops
        answering must stop the budget soon, not hours later: three of its poll
        intervals plus its timeout, or ``global.check.max_data_age`` if shorter.
        """
        if source.max_data_age is not None:
            return source.max_data_age
        interval = self.poll_interval(source)
        everywhere = self.global_.check.max_data_age
        if self.provider_class(source).metered:
            own = METERED_POLLS_BEFORE_STALE * interval + self.timeout(source)
            return own if everywhere is None else min(own, everywhere)
        return everywhere or max(MIN_BILLED_DATA_AGE, 2 * interval)

    def periods(self, source: SourceConfig) -> frozenset[Period]:
        """The periods this source is polled for: its budgets' and, if it can, monthly."""
        return self._periods[source.name]

    @cached_property
    def _periods(self) -> dict[str, frozenset[Period]]:
        wanted: dict[str, set[Period]] = {s.name: {Period.MONTHLY} for s in self.sources}
        for budget in self.budgets:
            for source in self.polled_sources(budget):
                wanted[source.name].add(budget.period)
        return {
            s.name: frozenset(wanted[s.name] & self.provider_class(s).periods_for(s))
            for s in self.sources
        }

    def warning_ratio(self, budget: BudgetConfig) -> float:
        return budget.warning_ratio or self.global_.warning_ratio

    def stop_ratio(self, budget: BudgetConfig) -> float:
        return budget.stop_ratio or self.global_.stop_ratio

    def alert_tuning(self, budget: BudgetConfig) -> AlertTuning:
        """The budget's settings for the spend-rate alerts (``tuning``)."""
        return resolve(self.global_, budget)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate ``path``; raise :class:`ConfigError` on any problem."""
    file = str(path)
    env = os.environ if env is None else env
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read file: {_os_reason(exc)}") from None
    try:
        raw = yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(file, "", _yaml_reason(exc)) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(file, "", f"invalid YAML: {type(exc).__name__}") from None
    if raw is None:
        raise ConfigError(file, "", "file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(file, "", "must be a mapping with global, sources and budgets")
    return _ConfigBuilder(file, env, Path(file).parent).build(raw)


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
        self.check_ratios(config)
        self.check_horizons(config)
        self.check_budget_sources(config)
        self.check_joins(config)
        self.check_data_ages(config)
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

    def check_ratios(self, config: Config) -> None:
        global_ = config.global_
        if global_.warning_ratio >= global_.stop_ratio:
            raise self.error(
                "global.warning_ratio",
                f"{global_.warning_ratio} must be below stop_ratio {global_.stop_ratio}",
            )
        for index, budget in enumerate(config.budgets):
            warning, stop = config.warning_ratio(budget), config.stop_ratio(budget)
            if warning >= stop:
                field_name = "warning_ratio" if budget.warning_ratio else "stop_ratio"
                raise self.error(
                    f"budgets[{index}].{field_name}",
                    f"warning ratio {warning} must be below stop ratio {stop}",
                )

    def check_horizons(self, config: Config) -> None:
        problem = horizon_problem(resolve(config.global_, BudgetTuning()), BudgetTuning())
        if problem is not None:
            raise self.error(f"global.{problem[0]}", problem[1])
        for index, budget in enumerate(config.budgets):
            problem = horizon_problem(config.alert_tuning(budget), budget)
            if problem is not None:
                raise self.error(f"budgets[{index}].{problem[0]}", problem[1])

    def check_data_ages(self, config: Config) -> None:
        """A source's own ``max_data_age`` leaves room for at least one poll."""
        for index, source in enumerate(config.sources):
            if source.max_data_age is not None and source.max_data_age <= config.poll_interval(
                source
            ):
                raise self.error(
                    f"sources[{index}].max_data_age",
                    "must be longer than the source's poll interval (else its data is stale "
                    "between two polls)",
                )

    def check_joins(self, config: Config) -> None:
        """A metered source's ``metered_after`` names a billed source with a data horizon,
        and every budget that counts the meter counts that bill too."""
        by_name = {s.name: s for s in config.sources}
        for index, source in enumerate(config.sources):
            billed = source.billed_source()
            if billed is None:
                continue
            where = f"sources[{index}].metered_after"
            target = by_name.get(billed)
            if target is None:
                raise self.error(where, f"unknown source {billed!r}")
            if target.billed_source() is not None:
                raise self.error(where, f"source {billed!r} is itself metered after another")
            if not config.provider_class(target).has_horizon(target):
                raise self.error(
                    where,
                    f"source {billed!r} ({target.provider}) does not report a data horizon, so "
                    "there is no point after which to count the meter (see docs/realtime.md)",
                )
            for pos, budget in enumerate(config.budgets):
                names = {s.name for s in config.budget_sources(budget)}
                if source.name in names and billed not in names:
                    raise self.error(
                        f"budgets[{pos}].sources",
                        f"counts the metered source {source.name!r} but not {billed!r}, the bill "
                        "it continues: add it (the meter alone covers only the time after the "
                        "bill's horizon)",
                    )

    def check_budget_sources(self, config: Config) -> None:
        names = {s.name for s in config.sources}
        for index, budget in enumerate(config.budgets):
            for pos, name in enumerate(budget.sources or ()):
                if name != "*" and name not in names:
                    raise self.error(f"budgets[{index}].sources[{pos}]", f"unknown source {name!r}")
            if budget.limit_from is not None and budget.limit_from.source not in names:
                raise self.error(
                    f"budgets[{index}].limit_from.source",
                    f"unknown source {budget.limit_from.source!r}",
                )
            for source in config.polled_sources(budget):
                supported = config.provider_class(source).periods_for(source)
                if budget.period not in supported:
                    kinds = ", ".join(sorted(supported))
                    raise self.error(
                        f"budgets[{index}].period",
                        f"source {source.name!r} ({source.provider}) reports only {kinds} spend, "
                        f"not {budget.period}",
                    )

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
            raise self.error(*_first_error(exc, model, path)) from None


def _first_error(exc: ValidationError, model: type[BaseModel], base: str) -> tuple[str, str]:
    """Path and message of the first problem, without the offending input."""
    error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
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
    return path, message


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
        return list(current.model_fields)
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
