"""Shared by the GCP provider tests: a service-account key, a provider context, and the
exporter's samples by labels.  The APIs' answers are recorded in the providers' test
folders (``tests/providers/gcp_*/fixtures/``).

Nothing here reaches Google: the key is generated locally and its ``token_uri``
is :data:`TOKEN_URI`, which the tests answer with ``responses``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Window
from budget_exporter.providers.base import Provider, ProviderContext
from budget_exporter.runtime.engine import Engine

TOKEN_URI = "https://oauth2.googleapis.com/token"


@functools.cache
def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def service_account_info() -> dict[str, str]:
    """A service-account key file's fields; the RSA key is made once per test run."""
    return {
        "type": "service_account",
        "project_id": "billing-admin",
        "private_key_id": "3f1c0ffee0ddba11",
        "private_key": _private_key_pem(),
        "client_email": "budget-exporter@billing-admin.iam.gserviceaccount.com",
        "client_id": "104729000000000000001",
        "token_uri": TOKEN_URI,
    }


def write_key_file(directory: Path, info: dict[str, str] | None = None) -> Path:
    """``info`` (default :func:`service_account_info`) as ``directory/key.json``."""
    path = directory / "key.json"
    path.write_text(json.dumps(info or service_account_info()))
    return path


def add_token_endpoint(rsps: responses.RequestsMock, access_token: str) -> None:
    """Answer the key's OAuth token requests with ``access_token``."""
    rsps.add(
        responses.POST,
        TOKEN_URI,
        json={"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"},
    )


def make_provider(
    cls: type[Provider], source: str, key_file: Path, retries: int, now: datetime, **fields: Any
) -> tuple[Any, Counter[str]]:
    """Source ``source`` of provider ``cls`` with the key in ``key_file``, a fixed clock
    and no backoff; and the counter of its request outcomes.  It logs to ``test.<provider>``."""
    counts: Counter[str] = Counter()
    context = ProviderContext(
        source=source,
        timeout=timedelta(seconds=5),
        retries=retries,
        retry_backoff=timedelta(0),
        max_retry_after=timedelta(seconds=1),
        record_request=lambda status: counts.update([status]),
        now=lambda: now,
        logger=logging.getLogger(f"test.{cls.name}"),
    )
    config = cls.config_model(
        name=source, provider=cls.name, credentials_file=str(key_file), **fields
    )
    return cls(config, context), counts


def poll_error(provider: Provider, windows: Sequence[Window]) -> str:
    """The message of the :class:`SourceError` that polling ``windows`` must raise."""
    with pytest.raises(SourceError) as err:
        provider.poll(windows)
    return str(err.value)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def engine_samples(engine: Engine) -> Samples:
    """``{(name, sorted label pairs): value}`` of the engine's current page."""
    text = engine.snapshot.rendered.text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
