"""Test harness: real processes and fake APIs on 127.0.0.1, and shared helpers.

- :mod:`tests.support.net`: ``free_port``, ``http_get``/``get_json``, ``wait_until``,
  and ``loopback_only`` (autouse fixture: no connection or name lookup off loopback).
- :mod:`tests.support.exporter`: ``run`` (the CLI to completion) and ``ExporterProcess``
  / ``exporters`` (a serving exporter with its own stderr, env, signals and exit code).
- :mod:`tests.support.aws`, :mod:`tests.support.gcp`: what the AWS and GCP provider
  tests share (offline AWS environment, harness; service-account key, export rows).
  Not imported here: they need the provider extras.
- :mod:`tests.support.services`: ``ServiceSet`` starting the exporter
  (``python -m budget_exporter``), Prometheus and Alertmanager, each waited for
  until ready and stopped on close; ``prom_query``, ``prom_alerts``, ``am_alerts``.
- :mod:`tests.support.receivers`: ``WebhookReceiver`` and ``SlackReceiver`` (record
  webhook posts) and ``SmtpRecorder`` (aiosmtpd; records mails and logins).
- :mod:`tests.support.fake_upstream`: ``FakeUpstream``, a scripted HTTP server standing
  in for a provider's API, and its ``Reply``.
- :mod:`tests.support.llm`: what the LLM/SaaS provider, check API and guard tests share
  (a provider built with a test context, the month under test, samples by labels).
- :mod:`tests.support.clock`: ``Clock``, a settable clock for the engine.
- :mod:`tests.support.backfill`: a counter's samples as OpenMetrics, loaded into a
  Prometheus data directory with ``promtool tsdb create-blocks-from openmetrics``.
- :mod:`tests.support.benchmarks`: ``run_quick``, a benchmark script's quick run (its
  JSON result and report), stopped and failed if it overstays.

Fixtures built on these live in ``tests/e2e/conftest.py``.
"""

from tests.support.net import free_port, get_json, http_get, wait_until
from tests.support.receivers import (
    ReceivedMail,
    SlackReceiver,
    SmtpRecorder,
    WebhookPost,
    WebhookReceiver,
)
from tests.support.services import (
    ALERTMANAGER,
    PROMETHEUS,
    Service,
    ServiceError,
    ServiceSet,
    am_alerts,
    find_binary,
    prom_alerts,
    prom_query,
)

__all__ = [
    "ALERTMANAGER",
    "PROMETHEUS",
    "ReceivedMail",
    "Service",
    "ServiceError",
    "ServiceSet",
    "SlackReceiver",
    "SmtpRecorder",
    "WebhookPost",
    "WebhookReceiver",
    "am_alerts",
    "find_binary",
    "free_port",
    "get_json",
    "http_get",
    "prom_alerts",
    "prom_query",
    "wait_until",
]
