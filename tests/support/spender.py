"""A small application that spends at a steady rate and exposes it to Prometheus.

Run as a script: ``python spender.py PORT``.  It serves ``GET /metrics`` and
``POST /start`` (spending begins: every 0.1 s one operation), ``GET /totals``
(what it has recorded, as JSON).  Each operation:

* records $0.20 through :mod:`budget_exporter.metering` (budget ``agent``,
  model ``gpt-4o``): $2 a second;
* adds to ``litellm_spend_metric_total`` as LiteLLM's proxy does (labels
  ``end_user``, ``hashed_api_key``, ``api_key_alias``, ``model``, ``team``,
  ``team_alias``, ``user``): $0.03 for ``gpt-4o``/team ``search`` and $0.02 for
  ``claude-sonnet-4``/team ``ads``;
* observes ``gen_ai.client.token.usage`` as OpenTelemetry GenAI instrumentation
  exported to Prometheus does (histogram ``gen_ai_client_token_usage``, labels
  ``gen_ai_operation_name``, ``gen_ai_system``, ``gen_ai_request_model``,
  ``gen_ai_response_model``, ``gen_ai_token_type``): 10,000 input and 2,000
  output tokens of ``claude-sonnet-4-20250514``, and 1,000 input tokens of
  ``house-model`` (``gen_ai_system="openai"``), a model no price table knows.

``POST /late`` records $50 once, for each of the budgets ``late`` (declared at zero at
start-up with ``Meter.declare``) and ``undeclared`` (not declared): series born in the
middle of the meter's range, the first with its whole spend visible to ``increase()``, the
second first scraped with its $50 already on it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from budget_exporter.metering import default_meter

TICK = 0.1
COST = 0.2
LITELLM = {("gpt-4o", "search"): 0.03, ("claude-sonnet-4", "ads"): 0.02}
MODEL = "claude-sonnet-4-20250514"
TOKENS = {"input": 10_000, "output": 2_000}
UNPRICED_MODEL = "house-model"
UNPRICED_TOKENS = 1_000
LATE = 50.0
GENAI_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]

litellm = Counter(
    "litellm_spend_metric",
    "Total spend on LLM requests",
    ["end_user", "hashed_api_key", "api_key_alias", "model", "team", "team_alias", "user"],
)
genai = Histogram(
    "gen_ai_client_token_usage",
    "Measures number of input and output tokens used",
    [
        "gen_ai_operation_name",
        "gen_ai_system",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
    ],
    buckets=GENAI_BUCKETS,
)
meter = default_meter()
started = threading.Event()
totals = {"operations": 0}
lock = threading.Lock()


def litellm_child(model: str, team: str) -> Counter:
    return litellm.labels("", "88dc28d0f030c5", "agent-key", model, team, team, "")


def genai_child(kind: str) -> Histogram:
    return genai.labels("chat", "anthropic", MODEL, MODEL, kind)


def unpriced_child() -> Histogram:
    return genai.labels("chat", "openai", UNPRICED_MODEL, UNPRICED_MODEL, "input")


def spend_forever() -> None:
    started.wait()
    tick = time.monotonic()
    while True:
        meter.record_cost("agent", COST, model="gpt-4o")
        for (model, team), amount in LITELLM.items():
            litellm_child(model, team).inc(amount)
        for kind, count in TOKENS.items():
            genai_child(kind).observe(count)
        unpriced_child().observe(UNPRICED_TOKENS)
        with lock:
            totals["operations"] += 1
        tick += TICK
        time.sleep(max(0.0, tick - time.monotonic()))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(generate_latest(), CONTENT_TYPE_LATEST)
        else:
            with lock:
                self._send(json.dumps(totals).encode(), "application/json")

    def do_POST(self) -> None:
        if self.path == "/late":
            meter.record_cost("late", LATE, model="gpt-4o-mini")
            meter.record_cost("undeclared", LATE, model="gpt-4o-mini")
        else:
            started.set()
        self._send(b"{}", "application/json")


def main() -> None:
    # Every series exists (at zero) before the first scrape, so increase() sees it all:
    # the metering helper's own declared, the others created without a value.
    meter.declare("agent", models=("gpt-4o",))
    meter.declare("late", models=("gpt-4o-mini",))  # recorded only later, at POST /late
    for model, team in LITELLM:
        litellm_child(model, team)
    for kind in TOKENS:
        genai_child(kind)
    unpriced_child()
    threading.Thread(target=spend_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
